"""Order documents shaped like VTEX's Get order answer, with varied but consistent fake data, and List orders."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sandbox.timestamps import iso_offset, iso_z

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Admin labels as VTEX's `statusDescription` shows them (obsolete field, kept for realism).
STATUS_DESCRIPTIONS = {
    "payment-pending": "Pagamento Pendente",
    "payment-approved": "Pagamento Aprovado",
    "window-to-cancel": "Carência para Cancelamento",
    "ready-for-handling": "Pronto para o manuseio",
    "start-handling": "Iniciar Manuseio",
    "handling": "Preparando Entrega",
    "invoice": "Verificando Envio",
    "invoiced": "Faturado",
    "cancel": "Cancelando",
    "canceled": "Cancelado",
}
NOT_CANCELLABLE = {"cancel", "canceled", "invoice", "invoiced"}

FIRST_NAMES = ["Ana", "Bruno", "Carla", "Diego", "Elisa", "Fábio", "Gabriela", "Heitor", "Isabela", "João",
               "Larissa", "Marcos", "Natália", "Otávio", "Paula", "Rafael", "Sofia", "Tiago", "Vanessa", "Wagner"]
LAST_NAMES = ["Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Ferreira", "Costa", "Rodrigues",
              "Almeida", "Nascimento", "Carvalho", "Gomes", "Martins", "Araújo", "Ribeiro"]
# (city, state, area code, postal prefix, neighborhood, street, lon, lat)
PLACES = [
    ("Rio de Janeiro", "RJ", "21", "22", "Botafogo", "Rua Voluntários da Pátria", -43.18, -22.95),
    ("São Paulo", "SP", "11", "01", "Pinheiros", "Rua dos Pinheiros", -46.68, -23.56),
    ("Belo Horizonte", "MG", "31", "30", "Savassi", "Rua Pernambuco", -43.93, -19.93),
    ("Curitiba", "PR", "41", "80", "Batel", "Avenida do Batel", -49.29, -25.44),
    ("Porto Alegre", "RS", "51", "90", "Moinhos de Vento", "Rua Padre Chagas", -51.20, -30.02),
    ("Salvador", "BA", "71", "40", "Barra", "Avenida Oceânica", -38.52, -13.01),
    ("Recife", "PE", "81", "50", "Boa Viagem", "Avenida Boa Viagem", -34.89, -8.12),
    ("Florianópolis", "SC", "48", "88", "Centro", "Rua Felipe Schmidt", -48.55, -27.60),
]
# (sku id, product id, name, ref id, price in cents, list price in cents)
PRODUCTS = [
    ("18", "6", "Bay Max L", "BIGBML", 990, 1990),
    ("21", "7", "Camiseta Básica Azul M", "CAMAZM", 4990, 5990),
    ("34", "11", "Tênis Corrida 42", "TENC42", 29990, 34990),
    ("35", "11", "Tênis Corrida 40", "TENC40", 29990, 34990),
    ("52", "19", "Garrafa Térmica 1L", "GART1L", 8990, 8990),
    ("77", "23", "Mochila Urbana", "MOCURB", 15900, 19900),
    ("81", "25", "Fone Bluetooth", "FONEBT", 24990, 29990),
    ("96", "31", "Caneca Cerâmica", "CANCER", 3490, 3490),
]
SHIPPING_PRICES = [0, 990, 1500, 2500]


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def given_line(raw: Any) -> tuple[tuple[str, str, str, str, int, int], int]:
    """A caller's item ({"id", "price", "quantity", "name"?}) as a PRODUCTS row and its quantity."""
    if not isinstance(raw, dict):
        raise TypeError("each item must be an object with id, price and quantity")
    sku, price, quantity = raw.get("id"), raw.get("price"), raw.get("quantity")
    if not isinstance(sku, str) or not sku:
        raise ValueError("item id must be a non-empty string (the SKU id)")
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise ValueError("item price must be an integer of cents, at least 0")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        raise ValueError("item quantity must be an integer of at least 1")
    return (sku, sku, str(raw.get("name") or f"SKU {sku}"), f"REF{sku}", price, price), quantity


@dataclass
class OrderRecord:
    """One order; its JSON is serialized once per change, not once per GET."""

    order_id: str
    doc: dict[str, Any]
    last_change: float
    _json: bytes | None = field(default=None, repr=False)
    # What VTEX answered to each invoice notification (by invoice number) and cancel: a repeat gets a new receipt.
    invoice_receipts: dict[str, list[str]] = field(default_factory=dict, repr=False)
    cancel_receipts: list[str] = field(default_factory=list, repr=False)

    @property
    def status(self) -> str:
        return self.doc["status"]

    @property
    def packages(self) -> list[dict[str, Any]]:
        """The order's invoices, as Get order shows them in `packageAttachment.packages`."""
        return (self.doc.get("packageAttachment") or {}).get("packages") or []

    def invoiced_value(self) -> int:
        return sum(package["invoiceValue"] for package in self.packages if package.get("type") == "Output")

    def returned_value(self) -> int:
        return sum(package["invoiceValue"] for package in self.packages if package.get("type") == "Input")

    def add_package(self, package: dict[str, Any]) -> None:
        if not isinstance(self.doc.get("packageAttachment"), dict):
            self.doc["packageAttachment"] = {"packages": []}
        self.doc["packageAttachment"].setdefault("packages", []).append(package)
        self.doc["allowCancellation"] = False  # a partially invoiced order cannot be canceled (spec)
        self.changed()

    def changed(self) -> None:
        """Call after editing `doc` in place, so the next GET serializes it again."""
        self._json = None

    def to_json(self) -> bytes:
        if self._json is None:
            self._json = json.dumps(self.doc, ensure_ascii=False).encode()
        return self._json

    def copy(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def set_status(self, status: str, now: float) -> None:
        doc = self.doc
        doc["status"] = status
        doc["statusDescription"] = STATUS_DESCRIPTIONS.get(status, status)
        doc["lastChange"] = iso_offset(now)
        doc["allowCancellation"] = status not in NOT_CANCELLABLE and self.invoiced_value() == 0
        if status == "invoiced":
            doc["invoicedDate"] = iso_offset(now)
        self.last_change = now
        self._json = None

    def list_item(self) -> dict[str, Any]:
        """The order as a row of List orders: VTEX's example shape, `items` null and no `lastChange`."""
        doc = self.doc
        profile = doc.get("clientProfileData") or {}
        payments = [payment.get("paymentSystemName") or "" for transaction in doc["paymentData"]["transactions"]
                    for payment in transaction["payments"]]
        logistics = doc["shippingData"]["logisticsInfo"]
        return {
            "orderId": self.order_id, "creationDate": doc["creationDate"],
            "clientName": f"{profile.get('firstName', '')} {profile.get('lastName', '')}".strip(), "items": None,
            "totalValue": doc["value"], "paymentNames": ", ".join(payments), "status": doc["status"],
            "statusDescription": doc["statusDescription"], "marketPlaceOrderId": doc.get("marketplaceOrderId") or None,
            "sequence": doc["sequence"], "salesChannel": str(doc.get("salesChannel") or "1"),
            "affiliateId": doc.get("affiliateId") or "", "origin": doc.get("origin") or "Marketplace",
            "workflowInErrorState": bool(doc.get("workflowIsInError")), "workflowInRetry": False,
            "lastMessageUnread": None,
            "ShippingEstimatedDate": logistics[0].get("shippingEstimateDate") if logistics else None,
            "ShippingEstimatedDateMax": None, "ShippingEstimatedDateMin": None,
            "orderIsComplete": bool(doc.get("isCompleted", True)), "listId": None, "listType": None,
            "authorizedDate": doc.get("authorizedDate"), "callCenterOperatorName": None,
            "totalItems": sum(int(item.get("quantity") or 0) for item in doc["items"]),
            "currencyCode": (doc.get("storePreferencesData") or {}).get("currencyCode") or "BRL",
        }

    def set_cancellation(self, reason: str, requested_by_user: bool, now: float) -> None:
        # PascalCase keys, as in VTEX's own Get order example.
        self.doc["cancelReason"] = reason
        self.doc["cancellationData"] = {
            "RequestedByUser": requested_by_user,
            "RequestedBySystem": False,
            "RequestedBySellerNotification": not requested_by_user,
            "RequestedByPaymentNotification": False,
            "Reason": reason,
            "CancellationDate": iso_z(now),
        }
        self._json = None


class OrderFactory:
    """Builds order documents from VTEX's public example; seeded, so a seed gives the same orders."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        template = load_fixture("get-order-response.json")
        # Kept as text: json.loads is a deep copy, about twice as fast as copy.deepcopy.
        self._item_text = json.dumps(template["items"][0])
        self._logistics_text = json.dumps(template["shippingData"]["logisticsInfo"][0])
        template["items"], template["shippingData"]["logisticsInfo"] = [], []  # rebuilt per order
        self._template_text = json.dumps(template)
        self._next_group = self._rng.randrange(10**11, 9 * 10**11)
        self._count = 0

    def next_order_id(self) -> str:
        """`1` + 12 digits + `-01`, like VTEX's `1172452900788-01` (order group + seller split)."""
        self._next_group += 1
        return f"1{self._next_group:012d}-01"

    def build(self, *, order_id: str, status: str, now: float,
              items: list[dict[str, Any]] | None = None) -> OrderRecord:
        """A new order; `items` ({"id", "price", "quantity", "name"?}) replaces the random ones, without freight."""
        self._count += 1
        n = self._count
        doc: dict[str, Any] = json.loads(self._template_text)
        doc["orderId"] = order_id
        doc["orderGroup"] = order_id.rsplit("-", 1)[0]
        doc["sequence"] = str(500_000 + n)
        doc["sellerOrderId"] = f"00-{order_id}"
        doc["marketplaceOrderId"] = ""
        doc["creationDate"] = doc["authorizedDate"] = iso_offset(now)
        # A fresh order has no invoice, cancellation or post-sale change yet; the example mixes all of them.
        doc["invoicedDate"] = None
        doc["cancelReason"] = None
        doc["cancellationData"] = None
        doc["changesAttachment"] = None
        doc["packageAttachment"]["packages"] = []
        first, last = self._customer(doc, n)
        self._address(doc, f"{first} {last}")
        self._items_and_totals(doc, order_id, items)
        record = OrderRecord(order_id=order_id, doc=doc, last_change=now)
        record.set_status(status, now)
        return record

    def _hex(self, length: int = 32) -> str:
        return f"{self._rng.getrandbits(length * 4):0{length}X}"

    def _uuid(self) -> str:
        h = self._hex().lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _cpf(self) -> str:
        """A CPF with valid check digits, formatted like the example (`845.134.270-19`)."""
        digits = [self._rng.randrange(10) for _ in range(9)]
        for weight_start in (10, 11):
            total = sum(d * w for d, w in zip(digits, range(weight_start, 1, -1)))
            digits.append(0 if total % 11 < 2 else 11 - total % 11)
        s = "".join(map(str, digits))
        return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"

    def _customer(self, doc: dict[str, Any], n: int) -> tuple[str, str]:
        rng = self._rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        area = rng.choice(PLACES)[2]
        phone = f"+55{area}9{rng.randrange(10**7, 10**8)}"
        profile = doc["clientProfileData"]
        profile.update(
            id=f"clientProfile_{n}",
            email=f"customer{n}@example.com",
            firstName=first,
            lastName=last,
            document=self._cpf(),
            phone=phone,
            userProfileId=self._uuid(),
            userProfileVersion=self._uuid(),
            customerCode=self._uuid(),
        )
        for contact in doc["shippingData"].get("contactInformation") or []:
            contact.update(email=profile["email"], firstName=first, lastName=last, phone=phone.lstrip("+"),
                           document=profile["document"])
        return first, last

    def _address(self, doc: dict[str, Any], receiver: str) -> None:
        rng = self._rng
        city, state, _, postal, neighborhood, street, lon, lat = rng.choice(PLACES)
        address = doc["shippingData"]["address"]
        address.update(
            receiverName=receiver,
            addressId=str(rng.randrange(10**12, 10**13)),
            versionId=self._uuid(),
            entityId=self._uuid(),
            postalCode=f"{postal}{rng.randrange(100, 1000)}-{rng.randrange(1000):03d}",
            city=city,
            state=state,
            street=street,
            number=str(rng.randrange(1, 3000)),
            neighborhood=neighborhood,
            complement=rng.choice(["", "apto 101", "casa 2", "bloco B"]),
            reference=None,
            geoCoordinates=[round(lon + rng.uniform(-0.05, 0.05), 7), round(lat + rng.uniform(-0.05, 0.05), 7)],
        )
        doc["shippingData"]["selectedAddresses"] = [dict(address)]

    def _items_and_totals(self, doc: dict[str, Any], order_id: str, given: list[dict[str, Any]] | None) -> None:
        rng = self._rng
        if given is None:
            shipping = rng.choice(SHIPPING_PRICES)
            lines: list[tuple[tuple[str, str, str, str, int, int], int | None]] = [
                (product, None) for product in rng.sample(PRODUCTS, rng.randint(1, 3))]
        else:
            shipping, lines = 0, [given_line(raw) for raw in given]
        items, logistics = [], []
        for index, ((sku, product, name, ref, price, list_price), given_quantity) in enumerate(lines):
            # Drawn inside the loop, between the items' ids, so a seed keeps giving the same orders.
            quantity = given_quantity if given_quantity is not None else rng.randint(1, 3)
            item = json.loads(self._item_text)
            item.update(
                uniqueId=self._hex(), id=sku, productId=product, refId=ref,
                ean=str(7890000000000 + int(sku)) if sku.isdecimal() else "7890000000000",
                name=name, quantity=quantity, price=price, listPrice=list_price, sellingPrice=price, sellerSku=sku,
                lockId=f"00-{order_id}", costPrice=price // 2, parentItemIndex=None, parentAssemblyBinding=None,
                priceDefinition={"sellingPrices": [{"value": price, "quantity": quantity}],
                                 "calculatedSellingPrice": price, "total": price * quantity, "reason": None},
            )
            items.append(item)
            info = json.loads(self._logistics_text)
            # The whole freight sits on the first item so that totals stay simple to check.
            item_shipping = shipping if index == 0 else 0
            info.update(itemIndex=index, price=item_shipping, listPrice=item_shipping, sellingPrice=item_shipping)
            for delivery in info.get("deliveryIds") or []:
                delivery["quantity"] = quantity
            logistics.append(info)
        doc["items"] = items
        doc["shippingData"]["logisticsInfo"] = logistics
        items_total = sum(i["price"] * i["quantity"] for i in items)
        amounts = {"Items": items_total, "Discounts": 0, "Shipping": shipping, "Tax": 0}
        for total in doc["totals"]:
            total["value"] = amounts.get(total["id"], 0)
        doc["value"] = items_total + shipping
        doc["roundingError"] = 0
        for transaction in doc["paymentData"]["transactions"]:
            transaction["transactionId"] = self._hex()
            for payment in transaction["payments"]:
                payment.update(id=self._hex(), value=doc["value"], referenceValue=doc["value"])


# ---- List orders (GET /api/oms/pvt/orders) ----------------------------------------------------------------------

LIST_DEFAULT_PER_PAGE, LIST_MAX_PER_PAGE, LIST_MAX_PAGES = 15, 100, 30  # the spec's numbers
ORDER_BY_FIELDS = {"creationDate": "creationDate", "orderId": "orderId", "items": "totalItems",
                   "totalValue": "totalValue", "origin": "origin"}
_CREATION_RANGE = re.compile(r"creationDate:\[(?P<start>\S+) TO (?P<end>\S+)\]")


class ListQueryError(ValueError):
    """A List orders query the sandbox answers with 400 (VTEX's own answer to these is undocumented)."""


def _bounded_int(query: dict[str, str], name: str, default: int, highest: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= highest:
        raise ListQueryError(f"{name} must be an integer between 1 and {highest}")
    return int(raw)


def _range_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ListQueryError(f"f_creationDate: not a timestamp: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class ListQuery:
    """The List orders parameters the sandbox implements; the other filters of the spec are accepted and ignored."""

    statuses: frozenset[str] | None = None
    created: tuple[datetime, datetime] | None = None
    order_by: str = "creationDate"
    descending: bool = True  # VTEX's default order is undocumented: newest first, as its admin lists them
    page: int = 1
    per_page: int = LIST_DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, query: dict[str, str]) -> ListQuery:
        statuses = frozenset(s.strip() for s in query["f_status"].split(",") if s.strip()) \
            if query.get("f_status") else None
        created = None
        if query.get("f_creationDate"):
            match = _CREATION_RANGE.fullmatch(query["f_creationDate"].strip())
            if match is None:
                raise ListQueryError("f_creationDate must look like creationDate:[<start> TO <end>]")
            created = (_range_time(match["start"]), _range_time(match["end"]))
        field_name, _, direction = (query.get("orderBy") or "creationDate,desc").partition(",")
        if field_name not in ORDER_BY_FIELDS or direction not in ("asc", "desc"):
            raise ListQueryError(f"orderBy must be one of {sorted(ORDER_BY_FIELDS)} with ,asc or ,desc")
        return cls(statuses=statuses or None, created=created, order_by=field_name, descending=direction == "desc",
                   page=_bounded_int(query, "page", 1, LIST_MAX_PAGES),
                   per_page=_bounded_int(query, "per_page", LIST_DEFAULT_PER_PAGE, LIST_MAX_PER_PAGE))

    def matches(self, record: OrderRecord) -> bool:
        if self.statuses is not None and record.status not in self.statuses:
            return False
        if self.created is not None:
            created = datetime.fromisoformat(record.doc["creationDate"])
            return self.created[0] <= created <= self.created[1]
        return True


def _stats(values: list[int]) -> dict[str, Any]:
    """One Solr-style stats block, as VTEX's example shows it."""
    count, total = len(values), sum(values)
    mean = total / count if count else 0
    variance = sum((value - mean) ** 2 for value in values) / (count - 1) if count > 1 else 0
    return {"Count": count, "Max": max(values, default=0), "Mean": mean, "Min": min(values, default=0), "Missing": 0,
            "StdDev": math.sqrt(variance), "Sum": total, "SumOfSquares": sum(value * value for value in values),
            "Facets": None}


def _stats_of(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    # VTEX's example always has both origins and BRL; the sandbox's orders are all BRL.
    currencies = {"BRL"} | {row["currencyCode"] for row in rows}
    return {**_stats([row[key] for row in rows]), "Facets": {
        "origin": {origin: _stats([row[key] for row in rows if row["origin"] == origin])
                   for origin in ("Fulfillment", "Marketplace")},
        "currencyCode": {code: _stats([row[key] for row in rows if row["currencyCode"] == code])
                         for code in sorted(currencies)},
    }}


def list_orders(records: Iterable[OrderRecord], query: ListQuery) -> dict[str, Any]:
    """The List orders answer: one page of rows, `paging` over every match, stats over every match."""
    rows = [record.list_item() for record in records if query.matches(record)]
    # creationDate strings share one format and offset, so they sort as text; orderId breaks ties.
    rows.sort(key=lambda row: (row[ORDER_BY_FIELDS[query.order_by]], row["orderId"]), reverse=query.descending)
    start = (query.page - 1) * query.per_page
    return {
        "list": rows[start:start + query.per_page],
        "facets": [],
        "paging": {"total": len(rows), "pages": math.ceil(len(rows) / query.per_page), "currentPage": query.page,
                   "perPage": query.per_page},
        "stats": {"stats": {"totalValue": _stats_of(rows, "totalValue"), "totalItems": _stats_of(rows, "totalItems")}},
    }
