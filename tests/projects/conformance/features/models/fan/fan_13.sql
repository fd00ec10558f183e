select 13 as id
