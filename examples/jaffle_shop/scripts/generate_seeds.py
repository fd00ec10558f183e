"""Generate the seed CSVs for the jaffle_shop example project.

The output is deterministic (``random.Random(42)``), so running this script
again reproduces the committed files byte for byte::

    python examples/jaffle_shop/scripts/generate_seeds.py

Amounts in ``raw_payments.csv`` are integer cents; the staging layer converts
them to dollars. The last few customers never place an order, which makes the
``severity: warn`` test on ``customers.first_order`` warn on purpose.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"

N_CUSTOMERS = 50
CUSTOMERS_WITHOUT_ORDERS = 3  # ids 48..50 never order
N_ORDERS = 200
FIRST_DAY = dt.date(2024, 1, 1)
N_DAYS = 120

FIRST_NAMES = [
    "Ada", "Bram", "Cleo", "Dario", "Edith", "Farah", "Gus", "Hana", "Ivo",
    "Juno", "Kofi", "Lena", "Milo", "Nia", "Otto", "Priya", "Quinn", "Rosa",
    "Sami", "Tove", "Uma", "Vik", "Wren", "Xavi", "Yara", "Zeno",
]
LAST_INITIALS = "ABCDEFGHIJKLMNOPRSTVW"

# (status, weight) -- older orders are more likely to be finished.
STATUSES = ["placed", "shipped", "completed", "return_pending", "returned"]
STATUS_WEIGHTS_OLD = [2, 4, 80, 4, 10]
STATUS_WEIGHTS_RECENT = [35, 35, 25, 3, 2]

PAYMENT_METHODS = ["credit_card", "coupon", "bank_transfer", "gift_card"]
PAYMENT_WEIGHTS = [55, 15, 20, 10]


def write_csv(name: str, header: list[str], rows: list[list[object]]) -> None:
    path = SEEDS_DIR / name
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {len(rows):>4} rows to {path}")


def main() -> None:
    rng = random.Random(42)
    SEEDS_DIR.mkdir(parents=True, exist_ok=True)

    customers = [
        [cid, rng.choice(FIRST_NAMES), rng.choice(LAST_INITIALS) + "."]
        for cid in range(1, N_CUSTOMERS + 1)
    ]

    ordering_customers = N_CUSTOMERS - CUSTOMERS_WITHOUT_ORDERS
    order_days = sorted(rng.randrange(N_DAYS) for _ in range(N_ORDERS))
    orders = []
    for oid, day in enumerate(order_days, start=1):
        recent = day >= N_DAYS - 14
        weights = STATUS_WEIGHTS_RECENT if recent else STATUS_WEIGHTS_OLD
        status = rng.choices(STATUSES, weights=weights)[0]
        order_date = FIRST_DAY + dt.timedelta(days=day)
        orders.append([oid, rng.randint(1, ordering_customers), order_date.isoformat(), status])

    payments = []
    for oid, *_ in orders:
        # Every order is paid; roughly a fifth are split over two payments,
        # a few over three.
        n_payments = rng.choices([1, 2, 3], weights=[82, 16, 2])[0]
        for _ in range(n_payments):
            method = rng.choices(PAYMENT_METHODS, weights=PAYMENT_WEIGHTS)[0]
            amount_cents = rng.randint(1, 30) * 100 if method == "coupon" else rng.randint(300, 6000)
            payments.append([len(payments) + 1, oid, method, amount_cents])

    write_csv("raw_customers.csv", ["id", "first_name", "last_name"], customers)
    write_csv("raw_orders.csv", ["id", "customer_id", "order_date", "status"], orders)
    write_csv("raw_payments.csv", ["id", "order_id", "payment_method", "amount"], payments)


if __name__ == "__main__":
    main()
