select 18 as id
