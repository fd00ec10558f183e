select 9 as id
