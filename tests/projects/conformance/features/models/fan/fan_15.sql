select 15 as id
