select 17 as id
