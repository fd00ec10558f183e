select 14 as id
