select 20 as id
