select 6 as id
