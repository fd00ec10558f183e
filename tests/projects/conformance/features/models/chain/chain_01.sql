select 1 as id, 0 as depth
