select 10 as id
