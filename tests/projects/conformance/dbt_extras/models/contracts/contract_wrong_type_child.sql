select * from {{ ref('contract_wrong_type') }}
