select
    order_id,
    customer_id,
    country,
    status,
    amount,
    order_ts,
    loaded_at
from {{ source('shop', 'orders') }}
