"""Tests of container_messaging.conversion: payload planning, strict structuring, wire names and media types."""

import dataclasses
import enum
import inspect
import pickle
import sys
import types
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Optional, TypeVar

import attrs
import pytest

from container_messaging.conversion import Converter, PayloadPlan
from container_messaging.errors import ConversionError, UnsupportedMediaTypeError

JSON = "application/json"
TEXT = "text/plain"
OCTET = "application/octet-stream"
PYOBJ = "application/x-python-object"


# ------------------------------------------------------------------------------------------ message classes


@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    age: int


@attrs.frozen
class Item:
    sku: str
    qty: int


@attrs.frozen
class Customer:
    full_name: str
    vip_level: int = 0


@attrs.frozen
class PlaceOrder:
    order_id: str
    customer: Customer
    items: list[Item]


@attrs.frozen
class Measurement:
    sensor_id: str
    reading: float
    active: bool


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Paint:
    color: Color
    painted_at: datetime
    batch_id: uuid.UUID
    note: str | None = None


@dataclasses.dataclass
class Shipment:
    tracking_code: str
    weight_kg: float
    parcels: list[Item] = dataclasses.field(default_factory=list)


T = TypeVar("T")


@attrs.frozen
class Envelope(Generic[T]):
    inner_value: T


@attrs.frozen
class Labels:
    label_counts: dict[str, int]


class NotAMessage:
    def __init__(self, x: int) -> None:
        self.x = x


# A module written with `from __future__ import annotations`: every annotation is a string, and Invoice refers to
# InvoiceLine before it is defined. It is registered in sys.modules so its classes resolve like any imported module's.
_FUTURE_SOURCE = """
from __future__ import annotations

import dataclasses

import attrs


@attrs.frozen
class Invoice:
    invoice_no: str
    lines: list[InvoiceLine]
    paid_by: Payer | None = None


@attrs.frozen
class InvoiceLine:
    line_total: int


@dataclasses.dataclass
class Payer:
    payer_name: str
"""
future_messages = types.ModuleType("conversion_future_messages")
sys.modules[future_messages.__name__] = future_messages
exec(compile(_FUTURE_SOURCE, "<conversion_future_messages>", "exec"), future_messages.__dict__)
Invoice = future_messages.Invoice
InvoiceLine = future_messages.InvoiceLine
Payer = future_messages.Payer


def conversion_errors(convert: Any, *args: Any) -> tuple[str, ...]:
    """The ``errors`` of the ConversionError that ``convert(*args)`` raises."""
    with pytest.raises(ConversionError) as info:
        convert(*args)
    return info.value.errors


@pytest.fixture
def converter() -> Converter:
    return Converter()


# ------------------------------------------------------------------------------------------ Any / object targets


@pytest.mark.parametrize("target", [inspect.Parameter.empty, Any, object])
def test_untyped_target_gets_decoded_json(converter, target):
    """A handler without a usable payload type gets the decoded JSON value."""
    assert converter.plan(target)(b'{"a": [1, 2]}', JSON) == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("body", "content_type", "expected"), [(b"h\xc3\xa9", TEXT, "hé"), (b"\x00\xff", OCTET, b"\x00\xff")]
)
def test_untyped_target_gets_text_as_str_and_octets_as_bytes(converter, body, content_type, expected):
    """A handler typed Any gets text/plain as str and application/octet-stream as bytes."""
    assert converter.to_python(body, content_type, Any) == expected


@pytest.mark.parametrize("target", [inspect.Parameter.empty, Any, object])
def test_untyped_target_gets_in_process_object_as_is(converter, target):
    """An in-process payload reaches an untyped handler unchanged (the same object)."""
    payload = NotAMessage(1)
    assert converter.plan(target)(payload, PYOBJ) is payload


# ------------------------------------------------------------------------------------------ str / bytes targets


@pytest.mark.parametrize("content_type", [JSON, TEXT, OCTET])
def test_str_target_gets_raw_body_as_text(converter, content_type):
    """A str handler gets the raw body decoded as UTF-8, even when the body is JSON."""
    assert converter.plan(str)(b'{"name": "\xc3\xa9"}', content_type) == '{"name": "é"}'


def test_str_target_gets_in_process_str_as_is(converter):
    """An in-process str reaches a str handler unchanged."""
    assert converter.plan(str)("hello", PYOBJ) == "hello"


def test_str_target_rejects_in_process_non_str(converter):
    """An in-process non-str for a str handler is a ConversionError at $."""
    assert conversion_errors(converter.plan(str), 42, PYOBJ) == ("invalid value for type, expected str @ $",)


def test_str_target_rejects_invalid_utf8(converter):
    """A body that is not UTF-8 cannot become a str."""
    (error,) = conversion_errors(converter.plan(str), b"\xff\xfe", TEXT)
    assert error.startswith("invalid UTF-8")


@pytest.mark.parametrize("content_type", [JSON, TEXT, OCTET])
def test_bytes_target_gets_raw_body(converter, content_type):
    """A bytes handler gets the raw body unchanged, whatever the wire content type."""
    assert converter.plan(bytes)(b'{"a": 1}', content_type) == b'{"a": 1}'


def test_bytes_target_encodes_str_payload_as_utf8(converter):
    """A str payload for a bytes handler is encoded as UTF-8."""
    assert converter.plan(bytes)("hé", TEXT) == b"h\xc3\xa9"


def test_bytes_target_gets_in_process_bytes_as_is(converter):
    """In-process bytes reach a bytes handler unchanged."""
    payload = b"\x00\x01"
    assert converter.plan(bytes)(payload, PYOBJ) is payload


# ------------------------------------------------------------------------------------------ dict / list targets


def test_dict_target_gets_decoded_json_object(converter):
    """A dict handler gets the decoded JSON object with its keys untouched."""
    assert converter.plan(dict)(b'{"person_id": 1, "x": [true]}', JSON) == {"person_id": 1, "x": [True]}


def test_dict_target_rejects_json_array(converter):
    """A JSON array for a dict handler is 'expected an object @ $'."""
    assert conversion_errors(converter.plan(dict), b"[1, 2]", JSON) == ("expected an object @ $",)


def test_list_target_rejects_json_object(converter):
    """A JSON object for a list handler is 'expected an array @ $'."""
    assert conversion_errors(converter.plan(list), b'{"a": 1}', JSON) == ("expected an array @ $",)


def test_abc_mapping_and_sequence_targets_get_decoded_json(converter):
    """Mapping[str, int] and Sequence[int] handlers get a dict and a list."""
    assert converter.to_python(b'{"a": 1}', JSON, Mapping[str, int]) == {"a": 1}
    assert converter.to_python(b"[1, 2]", JSON, Sequence[int]) == [1, 2]


def test_parametrized_dict_target_checks_its_values(converter):
    """dict[str, int] structures each value strictly and names the bad key."""
    plan = converter.plan(dict[str, int])
    assert plan(b'{"a": 1}', JSON) == {"a": 1}
    assert conversion_errors(plan, b'{"a": 1, "b": "2"}', JSON) == ("invalid value for type, expected int @ $['b']",)


def test_list_of_attrs_target_structures_each_item(converter):
    """list[Item] turns each JSON object into an Item."""
    assert converter.to_python(b'[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]', JSON, list[Item]) == [
        Item("a", 1),
        Item("b", 2),
    ]


def test_set_and_tuple_targets_are_built_from_json_arrays(converter):
    """set[int] and tuple[int, ...] handlers get a set and a tuple built from a JSON array."""
    assert converter.to_python(b"[1, 1, 2]", JSON, set[int]) == {1, 2}
    assert converter.to_python(b"[1, 2]", JSON, tuple[int, ...]) == (1, 2)


def test_in_process_dict_and_list_pass_through_as_is(converter):
    """In-process dicts and lists reach dict / list handlers unchanged (the same objects)."""
    payload_dict, payload_list = {"a": 1}, [1]
    assert converter.plan(dict)(payload_dict, PYOBJ) is payload_dict
    assert converter.plan(list)(payload_list, PYOBJ) is payload_list


def test_in_process_wrong_shape_for_dict_target_is_rejected(converter):
    """An in-process list for a dict handler is 'expected an object @ $'."""
    assert conversion_errors(converter.plan(dict), [1], PYOBJ) == ("expected an object @ $",)


def test_dict_target_accepts_json_sent_as_text_plain(converter):
    """A JSON object sent as text/plain (as Ecotone services often do) reaches a dict handler decoded."""
    assert converter.plan(dict)('{"a": 1}', TEXT) == {"a": 1}


# ------------------------------------------------------------------------------------------ attrs / dataclass targets


def test_attrs_target_from_json_with_camel_case_keys(converter):
    """camelCase JSON keys fill the snake_case fields of an attrs class."""
    plan = converter.plan(ChangeBillingDetails)
    assert plan(b'{"personId": "p-1", "age": 41}', JSON) == ChangeBillingDetails("p-1", 41)


def test_attrs_target_gets_in_process_instance_as_is(converter):
    """An in-process instance of the target class reaches the handler unchanged (the same object)."""
    payload = ChangeBillingDetails("p-1", 41)
    assert converter.plan(ChangeBillingDetails)(payload, PYOBJ) is payload


def test_attrs_target_structures_in_process_dict(converter):
    """An in-process dict (with wire key names) is structured into the target class."""
    assert converter.to_python({"personId": "p-1", "age": 41}, PYOBJ, ChangeBillingDetails) == ChangeBillingDetails(
        "p-1", 41
    )


def test_attrs_target_rejects_in_process_non_mapping(converter):
    """An in-process object that is neither the class nor a mapping is a ConversionError at $."""
    (error,) = conversion_errors(converter.plan(ChangeBillingDetails), 42, PYOBJ)
    assert error == "expected ChangeBillingDetails or a mapping, got int @ $"


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"null", b"3"])
def test_attrs_target_rejects_json_that_is_not_an_object(converter, body):
    """JSON that is not an object cannot become an attrs instance: 'expected an object @ $'."""
    assert conversion_errors(converter.plan(ChangeBillingDetails), body, JSON) == ("expected an object @ $",)


@pytest.mark.parametrize("content_type", [TEXT, "text/plain; charset=utf-8", OCTET])
def test_attrs_target_accepts_json_sent_as_text_or_octets(converter, content_type):
    """A JSON object sent as text/plain or octet-stream is decoded as JSON for an attrs handler."""
    assert converter.to_python(b'{"personId": "p", "age": 1}', content_type, ChangeBillingDetails) == (
        ChangeBillingDetails("p", 1)
    )


def test_attrs_target_rejects_text_that_is_not_json(converter):
    """Plain text that is not JSON, for an attrs handler, is an 'invalid JSON' ConversionError naming text/plain."""
    with pytest.raises(ConversionError) as info:
        converter.to_python(b"hello", TEXT, ChangeBillingDetails)
    assert str(info.value).startswith("cannot convert text/plain payload to ")
    assert info.value.errors[0].startswith("invalid JSON:")


def test_dataclass_target_from_json(converter):
    """A dataclass is structured from camelCase JSON, a nested list of attrs items included."""
    body = b'{"trackingCode": "T1", "weightKg": 2, "parcels": [{"sku": "a", "qty": 1}]}'
    shipment = converter.to_python(body, JSON, Shipment)
    assert shipment == Shipment("T1", 2.0, [Item("a", 1)])
    assert type(shipment.weight_kg) is float


def test_nested_attrs_and_list_of_attrs(converter):
    """Nested attrs classes and lists of them are structured, with camelCase keys at every level."""
    body = b'{"orderId": "o1", "customer": {"fullName": "Ann", "vipLevel": 2}, "items": [{"sku": "a", "qty": 3}]}'
    assert converter.to_python(body, JSON, PlaceOrder) == PlaceOrder("o1", Customer("Ann", 2), [Item("a", 3)])


def test_classes_with_future_annotations_and_forward_references(converter):
    """Classes whose annotations are strings (future annotations, forward references) convert both ways."""
    assert Invoice.__annotations__["lines"] == "list[InvoiceLine]"
    body = b'{"invoiceNo": "I-1", "lines": [{"lineTotal": 5}], "paidBy": {"payerName": "Bo"}}'
    invoice = converter.to_python(body, JSON, Invoice)
    assert invoice == Invoice("I-1", [InvoiceLine(5)], Payer("Bo"))
    assert converter.to_wire(invoice) == (
        b'{"invoiceNo":"I-1","lines":[{"lineTotal":5}],"paidBy":{"payerName":"Bo"}}',
        JSON,
    )


def test_generic_attrs_target_checks_its_type_argument(converter):
    """Envelope[int] structures its field as an int and rejects a str there."""
    plan = converter.plan(Envelope[int])
    assert plan(b'{"innerValue": 3}', JSON) == Envelope(3)
    assert conversion_errors(plan, b'{"innerValue": "3"}', JSON) == (
        "invalid value for type, expected int @ $.innerValue",
    )


def test_annotated_target_converts_as_its_inner_type(converter):
    """Annotated[Item, ...] converts as Item."""
    assert converter.to_python(b'{"sku": "a", "qty": 1}', JSON, Annotated[Item, "meta"]) == Item("a", 1)


# ------------------------------------------------------------------------------------------ other targets


@pytest.mark.parametrize(
    ("target", "body", "expected"),
    [(int, b"3", 3), (float, b"2.5", 2.5), (bool, b"true", True), (Color, b'"green"', Color.GREEN)],
)
def test_primitive_and_enum_targets_from_json(converter, target, body, expected):
    """int, float, bool and Enum handlers get the decoded JSON value as that type."""
    assert converter.to_python(body, JSON, target) == expected


def test_enum_error_lists_the_allowed_values(converter):
    """An unknown enum value is an error naming the enum and its allowed values."""
    assert conversion_errors(converter.plan(Color), b'"purple"', JSON) == (
        "invalid value for type, expected Color (one of 'red', 'green') @ $",
    )


@pytest.mark.parametrize(
    ("target", "label"),
    [(Optional[int], "Optional[int]"), (int | None, "int | None")],  # noqa: UP045
)
def test_optional_target_accepts_null_and_a_value(converter, target, label):
    """Optional[int] and int | None get None from null and an int from a number, and reject true."""
    plan = converter.plan(target)
    assert plan(b"null", JSON) is None
    assert plan(b"7", JSON) == 7
    assert conversion_errors(plan, b"true", JSON) == (f"invalid value for type, expected {label} @ $",)


def test_union_of_primitives_checks_member_types_exactly(converter):
    """int | str accepts an int or a str as they are and rejects a bool."""
    plan = converter.plan(int | str)
    assert plan(b'"3"', JSON) == "3"
    assert plan(b"3", JSON) == 3
    assert conversion_errors(plan, b"false", JSON) == ("invalid value for type, expected int | str @ $",)


def test_enum_datetime_and_uuid_fields(converter):
    """Enum values, ISO 8601 datetimes and UUID strings become Color, datetime and UUID fields."""
    body = (
        b'{"color": "red", "paintedAt": "2024-05-01T10:00:00+00:00", "batchId": "12345678-1234-5678-1234-567812345678"}'
    )
    assert converter.to_python(body, JSON, Paint) == Paint(
        Color.RED,
        datetime(2024, 5, 1, 10, tzinfo=UTC),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
    )


def test_unsupported_target_fails_when_planned(converter):
    """A plain class that cattrs cannot build fails at plan time with a ConversionError naming it."""
    with pytest.raises(ConversionError, match=r"no conversion to .*NotAMessage"):
        converter.plan(NotAMessage)


def test_plan_returns_a_reusable_payload_plan(converter):
    """plan() returns a PayloadPlan for the target, the same one for the same target."""
    plan = converter.plan(Item)
    assert isinstance(plan, PayloadPlan)
    assert plan.target is Item
    assert converter.plan(Item) is plan


# ------------------------------------------------------------------------------------------ strict primitives


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"personId": "p", "age": "3"}', "invalid value for type, expected int @ $.age"),
        (b'{"personId": "p", "age": 2.9}', "invalid value for type, expected int @ $.age"),
        (b'{"personId": "p", "age": true}', "invalid value for type, expected int @ $.age"),
        (b'{"personId": 1, "age": 3}', "invalid value for type, expected str @ $.personId"),
    ],
)
def test_primitive_fields_are_checked_not_coerced(converter, body, error):
    """str, float and bool values for an int field, and an int for a str field, are errors with the wire path."""
    assert conversion_errors(converter.plan(ChangeBillingDetails), body, JSON) == (error,)


def test_bool_field_rejects_a_number(converter):
    """1 is not a bool."""
    body = b'{"sensorId": "s", "reading": 1.5, "active": 1}'
    assert conversion_errors(converter.plan(Measurement), body, JSON) == (
        "invalid value for type, expected bool @ $.active",
    )


def test_int_is_accepted_for_a_float_field(converter):
    """An int for a float field is accepted and stored as a float."""
    measurement = converter.to_python(b'{"sensorId": "s", "reading": 3, "active": false}', JSON, Measurement)
    assert measurement.reading == 3.0
    assert type(measurement.reading) is float


@pytest.mark.parametrize("target", [int, float, bool])
def test_strict_checks_apply_to_top_level_primitive_targets(converter, target):
    """A JSON null for an int, float or bool handler is rejected at $."""
    body = b"null"
    assert conversion_errors(converter.plan(target), body, JSON) == (
        f"invalid value for type, expected {target.__name__} @ $",
    )


def test_strict_checks_apply_in_nested_positions(converter):
    """Strict checks run inside list items and dict values, and the error paths point there."""
    body = (
        b'{"orderId": "o", "customer": {"fullName": "A"}, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "2"}]}'
    )
    assert conversion_errors(converter.plan(PlaceOrder), body, JSON) == (
        "invalid value for type, expected int @ $.items[1].qty",
    )
    assert conversion_errors(converter.plan(Labels), b'{"labelCounts": {"x": 1, "y": true}}', JSON) == (
        "invalid value for type, expected int @ $.labelCounts['y']",
    )


def test_list_field_rejects_a_string(converter):
    """A JSON string for a list field is not split into characters: 'expected an array'."""
    body = b'{"orderId": "o", "customer": {"fullName": "A"}, "items": "ab"}'
    assert conversion_errors(converter.plan(PlaceOrder), body, JSON) == ("expected an array @ $.items",)


# ------------------------------------------------------------------------------------------ key names


def test_camel_case_false_keeps_python_names_both_ways():
    """With camel_case=False, JSON keys are the attribute names on the way in and out."""
    converter = Converter(camel_case=False)
    assert converter.to_python(b'{"person_id": "p", "age": 1}', JSON, ChangeBillingDetails) == ChangeBillingDetails(
        "p", 1
    )
    assert converter.to_wire(ChangeBillingDetails("p", 1)) == (b'{"person_id":"p","age":1}', JSON)
    assert conversion_errors(converter.plan(ChangeBillingDetails), b'{"personId": "p", "age": 1}', JSON) == (
        "required field missing @ $.person_id",
    )


def test_two_converters_share_no_configuration():
    """A camelCase converter and an as-is converter in one process each keep their own key names."""
    camel, as_is = Converter(), Converter(camel_case=False)
    assert as_is.unstructure(Customer("A", 1)) == {"full_name": "A", "vip_level": 1}
    assert camel.unstructure(Customer("A", 1)) == {"fullName": "A", "vipLevel": 1}
    assert camel.to_python(b'{"fullName": "A"}', JSON, Customer) == Customer("A")
    assert as_is.to_python(b'{"full_name": "A"}', JSON, Customer) == Customer("A")


def test_missing_field_path_uses_the_wire_name(converter):
    """A missing field is reported under its camelCase wire key."""
    assert conversion_errors(converter.plan(ChangeBillingDetails), b'{"age": 1}', JSON) == (
        "required field missing @ $.personId",
    )


def test_unknown_keys_are_ignored_by_default(converter):
    """Keys the class does not know are ignored unless forbidden."""
    body = b'{"personId": "p", "age": 1, "zzz": 0}'
    assert converter.to_python(body, JSON, ChangeBillingDetails) == ChangeBillingDetails("p", 1)


def test_unknown_keys_are_rejected_when_forbidden():
    """With forbid_unknown_keys=True, unknown keys are listed for the object that holds them, nested ones too."""
    converter = Converter(forbid_unknown_keys=True)
    body = b'{"orderId": "o", "customer": {"fullName": "A"}, "items": [{"sku": "a", "qty": 1, "colour": 2}], "zzz": 0}'
    assert set(conversion_errors(converter.plan(PlaceOrder), body, JSON)) == {
        "extra fields found (colour) @ $.items[0]",
        "extra fields found (zzz) @ $",
    }


# ------------------------------------------------------------------------------------------ error reports


def test_every_bad_field_is_reported_together(converter):
    """One ConversionError lists every bad field, each with its wire path."""
    body = b'{"orderId": 7, "customer": {"vipLevel": "high"}, "items": [{"sku": "a", "qty": 1.5}, {"qty": 2}]}'
    assert conversion_errors(converter.plan(PlaceOrder), body, JSON) == (
        "invalid value for type, expected str @ $.orderId",
        "required field missing @ $.customer.fullName",
        "invalid value for type, expected int @ $.customer.vipLevel",
        "invalid value for type, expected int @ $.items[0].qty",
        "required field missing @ $.items[1].sku",
    )


def test_error_message_names_content_type_and_target(converter):
    """The message starts with the content type and the target class's module and name."""
    with pytest.raises(ConversionError) as info:
        converter.to_python(b'{"age": 1}', JSON, ChangeBillingDetails)
    assert str(info.value).startswith(
        f"cannot convert application/json payload to {ChangeBillingDetails.__module__}.ChangeBillingDetails: "
    )


def test_malformed_json_names_content_type_and_position(converter):
    """decode() of malformed JSON is a ConversionError naming application/json and the error position."""
    with pytest.raises(ConversionError) as info:
        converter.decode(b'{"a": 1,, }', JSON)
    assert "application/json" in str(info.value)
    assert info.value.errors == (
        "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 9 (char 8)",
    )


def test_malformed_json_for_a_handler_is_a_conversion_error(converter):
    """Malformed JSON for an attrs handler is a ConversionError naming the target and the JSON error."""
    with pytest.raises(ConversionError) as info:
        converter.to_python(b'{"personId": ', JSON, ChangeBillingDetails)
    assert "ChangeBillingDetails" in str(info.value)
    assert info.value.errors[0].startswith("invalid JSON: Expecting value at line 1 column 14")


def test_invalid_utf8_text_is_a_conversion_error(converter):
    """decode() of text/plain bytes that are not UTF-8 is a ConversionError."""
    with pytest.raises(ConversionError, match="invalid UTF-8"):
        converter.decode(b"\xc3\x28", TEXT)


# ------------------------------------------------------------------------------------------ media types

_side_effects: list[str] = []


def _record_unpickling(note: str) -> str:
    _side_effects.append(note)
    return note


class _Booby:
    def __reduce__(self):
        return (_record_unpickling, ("unpickled!",))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-python-serialize",
        "application/x-yaml",
        "application/yaml",
        "text/yaml",
        "application/x-msgpack",
        "application/x-python-serialize; charset=binary",
    ],
)
def test_unsafe_content_types_are_refused_without_decoding(converter, monkeypatch, content_type):
    """pickle / YAML / msgpack bodies are refused 'for safety' by decode() and by every plan, and never decoded."""
    import yaml

    def forbidden(*args, **kwargs):
        raise AssertionError("a deserializer was called")

    for module, name in [
        (pickle, "loads"),
        (pickle, "load"),
        (yaml, "load"),
        (yaml, "safe_load"),
        (yaml, "unsafe_load"),
    ]:
        monkeypatch.setattr(module, name, forbidden)
    _side_effects.clear()
    body = pickle.dumps(_Booby())
    for convert in (
        converter.decode,
        converter.plan(Any),
        converter.plan(dict),
        converter.plan(ChangeBillingDetails),
        converter.plan(str),
        converter.plan(bytes),
        converter.plan(int),
    ):
        with pytest.raises(UnsupportedMediaTypeError, match="refused for safety"):
            convert(body, content_type)
    assert _side_effects == []


def test_unknown_content_type_is_unsupported_and_named(converter):
    """An unknown content type is an UnsupportedMediaTypeError naming it."""
    with pytest.raises(UnsupportedMediaTypeError, match="image/png"):
        converter.decode(b"\x89PNG", "image/png")
    with pytest.raises(UnsupportedMediaTypeError, match="image/png"):
        converter.to_python(b"\x89PNG", "image/png", ChangeBillingDetails)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json; charset=utf-8", {"a": "é"}),
        ("Application/JSON;charset=UTF-8", {"a": "é"}),
        ("text/plain; charset=utf-8", '{"a": "é"}'),
    ],
)
def test_content_type_parameters_are_ignored(converter, content_type, expected):
    """Parameters such as '; charset=utf-8' and letter case do not change how a body is decoded."""
    assert converter.decode('{"a": "é"}'.encode(), content_type) == expected


def test_decode_octet_stream_returns_bytes(converter):
    """decode() of application/octet-stream returns the body as bytes."""
    assert converter.decode(b"\x00\x01", OCTET) == b"\x00\x01"


# ------------------------------------------------------------------------------------------ to_wire / unstructure


def test_to_wire_attrs_instance_is_camel_case_json(converter):
    """An attrs instance is serialized as compact UTF-8 JSON with camelCase keys, nested ones too."""
    order = PlaceOrder("o1", Customer("Zoë"), [Item("a", 1)])
    body, content_type = converter.to_wire(order)
    assert content_type == JSON
    assert body == '{"orderId":"o1","customer":{"fullName":"Zoë","vipLevel":0},"items":[{"sku":"a","qty":1}]}'.encode()


def test_to_wire_dataclass_instance(converter):
    """A dataclass instance is serialized as JSON with camelCase keys."""
    assert converter.to_wire(Shipment("T1", 1.5)) == (b'{"trackingCode":"T1","weightKg":1.5,"parcels":[]}', JSON)


def test_to_wire_dict_with_nested_objects(converter):
    """A dict keeps its own keys; attrs values, enums, datetimes and UUIDs inside it become JSON."""
    payload = {
        "the_item": Item("a", 1),
        "color": Color.RED,
        "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "id": uuid.UUID(int=1),
        "n": [None, True, 1.5],
    }
    body, _ = converter.to_wire(payload)
    assert body == (
        b'{"the_item":{"sku":"a","qty":1},"color":"red","at":"2024-01-02T03:04:05+00:00",'
        b'"id":"00000000-0000-0000-0000-000000000001","n":[null,true,1.5]}'
    )


def test_to_wire_round_trips_through_a_plan(converter):
    """What to_wire produces converts back to an equal object."""
    paint = Paint(Color.GREEN, datetime(2024, 1, 1, tzinfo=UTC), uuid.uuid4(), note="x")
    assert converter.to_python(*converter.to_wire(paint), Paint) == paint


def test_to_wire_str_as_text_plain_and_as_json(converter):
    """A str is UTF-8 text for text/plain and a JSON string literal for application/json."""
    assert converter.to_wire("hé", TEXT) == (b"h\xc3\xa9", TEXT)
    assert converter.to_wire("hé", JSON) == ('"hé"'.encode(), JSON)


@pytest.mark.parametrize("media_type", [JSON, TEXT, OCTET, "image/png"])
def test_to_wire_bytes_pass_through(converter, media_type):
    """bytes are sent unchanged with the given media type."""
    assert converter.to_wire(b"\x00raw", media_type) == (b"\x00raw", media_type)


def test_to_wire_unserializable_object_names_its_type(converter):
    """An object that JSON cannot represent is a ConversionError naming its type."""
    with pytest.raises(ConversionError, match=r"cannot serialize .*NotAMessage as application/json"):
        converter.to_wire(NotAMessage(1))
    with pytest.raises(ConversionError, match=r"builtins\.dict.*NotAMessage is not JSON serializable"):
        converter.to_wire({"x": NotAMessage(1)})


def test_to_wire_text_plain_needs_a_str(converter):
    """A non-str object cannot be sent as text/plain."""
    with pytest.raises(ConversionError, match="text/plain needs a str"):
        converter.to_wire({"a": 1}, TEXT)


def test_to_wire_refuses_unsafe_media_types(converter):
    """An object cannot be serialized as pickle."""
    with pytest.raises(UnsupportedMediaTypeError, match="refused for safety"):
        converter.to_wire({"a": 1}, "application/x-python-serialize")


def test_unstructure_gives_wire_key_names(converter):
    """unstructure() turns an attrs instance into a dict keyed by wire names, nested classes included."""
    assert converter.unstructure(PlaceOrder("o", Customer("A"), [Item("s", 1)])) == {
        "orderId": "o",
        "customer": {"fullName": "A", "vipLevel": 0},
        "items": [{"sku": "s", "qty": 1}],
    }


def test_type_name_is_module_and_qualified_name(converter):
    """type_name() gives 'module.QualName' for an instance and for a class."""
    expected = f"{Item.__module__}.Item"
    assert converter.type_name(Item("a", 1)) == expected
    assert converter.type_name(Item) == expected
    assert converter.type_name(Invoice("I", [])) == "conversion_future_messages.Invoice"
