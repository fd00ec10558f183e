select 19 as id
