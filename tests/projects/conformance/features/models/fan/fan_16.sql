select 16 as id
