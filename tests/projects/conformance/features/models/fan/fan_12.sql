select 12 as id
