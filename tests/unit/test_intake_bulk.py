"""Bulk files into submissions (services/intake/bulk.py) and the loader's pure parts
(services/intake/submit.py): headers, conversions, formats, streaming, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.intake.bulk import (
    BulkFileError,
    Checkpoint,
    check_columns,
    count,
    count_records,
    detect_format,
    fft_period,
    fingerprint,
    header_key,
    records,
    uk_date,
)
from services.intake.submit import Reporter, batched, routing_key, url_user
from services.intake.validation import Parsed, parse

NHSE_HEADER = ("Period,Org code,Org name,Site code,Site name,Very good,Good,"
               "Neither good nor poor,Poor,Very poor,Don't know,Total responses,Total eligible")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("header, key", [
    ("Org code", "org_code"), ("ORG CODE", "org_code"), ("org_code", "org_code"),
    ("Don't know", "dont_know"), ("Don\u2019t know", "dont_know"), (" Very poor ", "very_poor"),
    ("A&E", "a_and_e"), ("Neither good nor poor", "neither_good_nor_poor"),
])
def test_header_key(header: str, key: str) -> None:
    assert header_key(header) == key


@pytest.mark.parametrize("value, period", [
    ("2026-10", "2026-10"), ("2026-10-01", "2026-10"), ("10/2026", "2026-10"),
    ("Oct-26", "2026-10"), ("OCT-2026", "2026-10"), ("October 2026", "2026-10"),
    ("Sept 2026", "2026-09"), ("Ju-26", "Ju-26"), ("Q3 2026", "Q3 2026"), ("", ""),
])
def test_fft_period(value: str, period: str) -> None:
    assert fft_period(value) == period


@pytest.mark.parametrize("value, iso", [
    ("03/11/2026", "2026-11-03"), ("3/11/2026", "2026-11-03"), ("2026-11-03", "2026-11-03"),
    ("2026-11-03T10:15:00", "2026-11-03"), ("3rd Nov", "3rd Nov"),
])
def test_uk_date(value: str, iso: str) -> None:
    assert uk_date(value) == iso


def test_count_keeps_what_it_cannot_read() -> None:
    assert count("1,234") == 1234
    assert count(" 7 ") == 7
    assert count("*") == "*"   # suppressed: intake rejects it with a reason
    assert count("-3") == "-3"


def test_fft_row_in_the_published_layout_becomes_a_valid_submission(tmp_path: Path) -> None:
    path = write(tmp_path, "fft.csv", NHSE_HEADER + "\n"
                 "Oct-26,rj1,Guy's,RJ122,St Thomas',\"1,204\",233,41,22,17,9,1526,4120\n")
    assert detect_format(path) == "fft-csv"
    assert check_columns(path, "fft-csv", setting="Inpatient") == [
        "Org name", "Site name", "Total responses"]
    [record] = records(path, "fft-csv", setting="Inpatient")
    body = json.loads(record.body)
    assert body == {"kind": "fft_monthly", "version": 1, "ods_code": "RJ1", "site_code": "RJ122",
                    "period": "2026-10", "setting": "inpatient", "very_good": 1204, "good": 233,
                    "neither_good_nor_poor": 41, "poor": 22, "very_poor": 17, "dont_know": 9,
                    "total_eligible": 4120, "record_id": "FFT-RJ1-RJ122-inpatient-2026-10"}
    parsed = parse(record.body)
    assert isinstance(parsed, Parsed)
    assert parsed.content["percent_negative"] == round(100 * 39 / 1526, 4)


def test_fft_csv_with_the_kinds_json_field_names(tmp_path: Path) -> None:
    path = write(tmp_path, "fft.csv",
                 "ods_code,period,setting,very_good,good,neither_good_nor_poor,poor,very_poor,"
                 "dont_know,record_id\nRAL,2026-09,A&E,1,2,3,4,5,6,my-id\n")
    [record] = records(path, "fft-csv")
    body = json.loads(record.body)
    assert (body["setting"], body["record_id"], "site_code" in body) == ("a_and_e", "my-id", False)
    assert isinstance(parse(record.body), Parsed)


def test_fft_csv_without_a_setting_needs_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, "fft.csv", NHSE_HEADER + "\n")
    with pytest.raises(BulkFileError, match="setting"):
        check_columns(path, "fft-csv")


def test_fft_csv_missing_counts_is_refused_before_sending(tmp_path: Path) -> None:
    path = write(tmp_path, "fft.csv", "Period,Org code,Setting,Very good,Good\n")
    with pytest.raises(BulkFileError) as refused:
        check_columns(path, "fft-csv")
    # The published headers, as the README lists them, not the JSON field names.
    message = str(refused.value)
    assert 'missing column(s) "Neither good nor poor", "Poor", "Very poor", "Don\'t know"' in message
    assert "neither_good_nor_poor" not in message and "dont_know" not in message


def test_unreadable_values_are_passed_on_for_intake_to_reject(tmp_path: Path) -> None:
    path = write(tmp_path, "fft.csv", NHSE_HEADER + ",Setting\n"
                 "2026-10,RJ1,x,RJ122,y,*,1,1,1,1,1,6,10,Inpatient\n")
    [record] = records(path, "fft-csv")
    reasons = parse(record.body)
    assert isinstance(reasons, list)
    assert [(r.loc, r.type) for r in reasons] == [("very_good", "int_parsing")]


RESPONSES_HEADER = "Response ID,Org code,Site code,Response date,Setting,Answer,Comment,Ward"


def test_an_fft_responses_export_makes_one_fft_response_per_row(tmp_path: Path) -> None:
    path = write(tmp_path, "responses.csv", RESPONSES_HEADER + "\n"
                 "R-1,rj1,rj122,03/11/2026,Inpatients,Very good,Kind staff,Florence\n"
                 "R-2,RJ1,,2026-11-04,A&E,5,,Majors\n"
                 "R-3,RJ1,RJ121,04/11/2026,Maternity,Don't know,,\n")
    assert detect_format(path) == "fft-responses-csv"
    assert check_columns(path, "fft-responses-csv") == ["Ward"]
    bodies = [json.loads(r.body) for r in records(path, "fft-responses-csv")]
    assert bodies == [
        {"kind": "fft_response", "version": 1, "ods_code": "RJ1", "site_code": "RJ122",
         "record_id": "R-1", "responded_on": "2026-11-03", "setting": "inpatient",
         "answer": "very_good", "comment": "Kind staff"},
        {"kind": "fft_response", "version": 1, "ods_code": "RJ1", "record_id": "R-2",
         "responded_on": "2026-11-04", "setting": "a_and_e", "answer": "very_poor"},
        {"kind": "fft_response", "version": 1, "ods_code": "RJ1", "site_code": "RJ121",
         "record_id": "R-3", "responded_on": "2026-11-04", "setting": "maternity",
         "answer": "dont_know"}]
    assert all(isinstance(parse(r.body), Parsed) for r in records(path, "fft-responses-csv"))


def test_an_fft_responses_export_without_an_id_or_setting_is_refused_before_sending(
        tmp_path: Path) -> None:
    path = write(tmp_path, "responses.csv", "Org code,Response date,Answer\n")
    assert detect_format(path) == "fft-responses-csv"
    with pytest.raises(BulkFileError) as refused:
        check_columns(path, "fft-responses-csv")
    message = str(refused.value)
    assert 'missing column(s) "Response ID", "Setting" (or --setting)' in message
    assert "an FFT responses export needs" in message
    path = write(tmp_path, "responses.csv", "Response ID,Response date,Answer\nR-1,01/11/2026,7\n")
    assert check_columns(path, "fft-responses-csv", setting="inpatient", ods_code="RJ1") == []
    [record] = records(path, "fft-responses-csv", setting="inpatient", ods_code="RJ1")
    reasons = parse(record.body)  # an answer code that is not one: intake says why
    assert isinstance(reasons, list) and [r.loc for r in reasons] == ["answer"]


COMPLAINTS_HEADER = ("Complaint reference,Org code,Date received,KO41a subject area,Details,"
                     "Consequence,Likelihood,Date acknowledged,Outcome,Date closed,Handler")


def test_complaints_export_row_becomes_a_valid_complaint(tmp_path: Path) -> None:
    path = write(tmp_path, "complaints.csv", COMPLAINTS_HEADER + "\n"
                 'C-1,RJ1,10/11/2026,Appointments,"Letter sent twice,\nwith two times",2,3,'
                 "12/11/2026,Partially upheld,20/11/2026,J Smith\n"
                 ",,,,,,,,,,\n"
                 "C-2,,09/11/2026,Parking fines,Other,,,,,,\n")
    assert detect_format(path) == "complaints-csv"
    assert check_columns(path, "complaints-csv", ods_code="RAL") == ["Handler"]
    first, second = records(path, "complaints-csv", ods_code="RAL")
    body = json.loads(first.body)
    assert body == {"kind": "complaint", "version": 1, "ods_code": "RJ1", "record_id": "C-1",
                    "subject_area": "Appointments",
                    "description": "Letter sent twice,\nwith two times",
                    "received_on": "2026-11-10", "acknowledged_on": "2026-11-12",
                    "closed_on": "2026-11-20", "outcome": "partly_upheld",
                    "risk": {"consequence": 2, "likelihood": 3}}
    assert isinstance(parse(first.body), Parsed)
    # The blank row is skipped; the next one is record 2, for the --ods provider. Lines are
    # the file's: the header is line 1, the first record spans lines 2-3.
    assert (first.line, second.number, second.line) == (2, 2, 5)
    assert json.loads(second.body)["ods_code"] == "RAL"
    reasons = parse(second.body)
    assert isinstance(reasons, list) and [r.loc for r in reasons] == ["subject_area"]


def test_complaints_export_without_provider_column_needs_ods(tmp_path: Path) -> None:
    path = write(tmp_path, "complaints.csv", "Reference,Date received,Subject,Description\n")
    with pytest.raises(BulkFileError, match=r'"Org code" \(or --ods\)'):
        check_columns(path, "complaints-csv")


def test_json_lines_are_sent_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b'{"kind": "compliment"}\r\n\n\xff\xfe not json\n  \n{"a":1}')
    found = list(records(path, "jsonl"))
    assert [(r.number, r.body) for r in found] == [
        (1, b'{"kind": "compliment"}'), (2, b"\xff\xfe not json"), (3, b'{"a":1}')]
    assert [r.line for r in found] == [1, 3, 5]
    assert count_records(path, "jsonl") == 3
    assert [r.number for r in records(path, "jsonl", start_after=2)] == [3]


@pytest.mark.parametrize("name, header", [("x.xlsx", "a"), ("x.csv", "name,address\n")])
def test_unknown_files_are_refused(tmp_path: Path, name: str, header: str) -> None:
    with pytest.raises(BulkFileError):
        detect_format(write(tmp_path, name, header))


def test_records_resume_after_a_number_and_count_matches(tmp_path: Path) -> None:
    rows = "\n".join(f"2026-0{m},RJ1,x,RJ1{m},y,1,1,1,1,1,1,6,10" for m in range(1, 8))
    path = write(tmp_path, "fft.csv", NHSE_HEADER + "\n" + rows + "\n")
    assert count_records(path, "fft-csv") == 7
    assert [r.number for r in records(path, "fft-csv", start_after=4, setting="gp")] == [5, 6, 7]
    assert [len(b) for b in batched(records(path, "fft-csv", setting="gp"), 3)] == [3, 3, 1]


def test_checkpoint_round_trip_and_fingerprint(tmp_path: Path) -> None:
    data = write(tmp_path, "fft.csv", NHSE_HEADER + "\n")
    cp_path = tmp_path / "fft.csv.checkpoint.json"
    cp = Checkpoint(str(data), fingerprint(data), "fft-csv", "guest", "run1", done=500, sent=1000)
    cp.counts["accepted"] = 499
    cp.save(cp_path)
    assert not (tmp_path / "fft.csv.checkpoint.json.tmp").exists()
    loaded = Checkpoint.load(cp_path)
    assert loaded is not None
    assert (loaded.done, loaded.sent, loaded.run_id, loaded.counts["accepted"]) == (
        500, 1000, "run1", 499)
    data.write_text(NHSE_HEADER + "\nmore\n")
    assert fingerprint(data) != cp.fingerprint
    cp_path.write_text("{not json")
    with pytest.raises(BulkFileError, match="--restart"):
        Checkpoint.load(cp_path)
    assert Checkpoint.load(tmp_path / "none.json") is None


@pytest.mark.parametrize("body, key", [
    (b'{"kind":"fft_monthly","x":1}', "submission.fft_monthly.v1"),
    (b'{"a": 1, "kind" : "complaint"}', "submission.complaint.v1"),
    (b'{"kind":"no.dots#here"}', "submission.unknown.v1"),
    (b"\xff\xfe", "submission.unknown.v1"),
])
def test_routing_key_from_the_body(body: bytes, key: str) -> None:
    assert routing_key(body) == key


def test_feed_is_the_amqp_user() -> None:
    assert url_user("amqp://feed-rj1:secret@broker:5672/") == "feed-rj1"
    assert url_user("amqp://broker/") == "guest"
    assert url_user("amqp://feed%40x:p@h/") == "feed@x"


def test_reporter_without_a_terminal_prints_lines(tmp_path: Path) -> None:
    out = (tmp_path / "progress.txt").open("w+")
    reporter = Reporter(total=10, done=0, label="x", stream=out, every=0)
    reporter.advance(5, {"accepted": 4, "rejected": 1})
    reporter.advance(5, {"accepted": 9, "rejected": 1})
    reporter.stop()
    out.seek(0)
    lines = out.read().splitlines()
    assert lines[-1].startswith("10/10 records (100%)  accepted 9  duplicate 0  rejected 1")
