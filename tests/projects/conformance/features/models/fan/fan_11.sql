select 11 as id
