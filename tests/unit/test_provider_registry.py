"""The provider registry's files: carewatch's CSV (every provider type, each with its ICB)
and the ODS data files in their published layout (epraccur, etr: 27 columns, no header)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.escalation.people import People
from services.escalation.visits import follow_up_months
from services.intake import store
from services.intake.registry import (
    PROVIDER_TYPES,
    RegistryFileError,
    ods_name,
    read_networks,
    read_registry,
)
from shared.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "data"


def test_the_samples_cover_every_provider_type_each_with_its_icb() -> None:
    rows = [*store.read_providers_csv(store.SAMPLE_PROVIDERS),
            *store.read_providers_csv(store.SAMPLE_OTHER_PROVIDERS)]
    assert {r["provider_type"] for r in rows} == set(PROVIDER_TYPES)
    assert all(r["icb_name"] for r in rows if r["region"] != "London")
    rj1 = next(r for r in rows if r["ods_code"] == "RJ1")
    assert (rj1["icb_code"], rj1["icb_name"]) == ("QKK", "NHS South East London ICB")
    assert all(r["network_code"] for r in rows if r["provider_type"] == "gp_practice")
    assert all(r["cqc_location_id"] for r in rows if r["provider_type"] == "care_home")


def test_epraccur_in_its_published_layout() -> None:
    networks = read_networks(DATA / "ods" / "pcn-core-partners-sample.csv")
    # A practice that left a PCN keeps only its current one.
    assert networks["G84999"] == ("U99902", "EXAMPLE BROMLEY NORTH PCN")
    fmt, loaded = read_registry(DATA / "ods" / "epraccur-sample.csv", icb="qkk",
                                icb_names=store.icb_names(), networks=networks)
    assert fmt == "epraccur"
    assert [(r["ods_code"], r["name"], r["provider_type"], r["icb_name"], r["network_name"])
            for r in loaded.rows] == [
        ("G85999", "Example Lewisham Medical Practice", "gp_practice",
         "NHS South East London ICB", "Example Lewisham Central PCN"),
        ("G85998", "Example Deptford Health Centre", "gp_practice",
         "NHS South East London ICB", "Example Lewisham Central PCN"),
        ("G84999", "Example Bromley Road Surgery", "gp_practice",
         "NHS South East London ICB", "Example Bromley North PCN")]
    assert dict(loaded.skipped) == {"closed, dormant or proposed": 1,
                                    "not a GP practice (another prescribing setting)": 1,
                                    "not in ICB QKK": 1}
    assert all(r["quality_contact_email"] is None for r in loaded.rows)  # ODS names none


def test_etr_trusts_keep_a_known_type() -> None:
    fmt, loaded = read_registry(DATA / "ods" / "etr-sample.csv", icb_names=store.icb_names())
    assert fmt == "etr"
    assert [(r["ods_code"], r["name"], r["keep_type"]) for r in loaded.rows] == [
        ("RJ1", "Guy's and St Thomas' NHS Foundation Trust", "yes"),
        ("RJ2", "Lewisham and Greenwich NHS Trust", "yes")]
    _, typed = read_registry(DATA / "ods" / "etr-sample.csv", "ods", provider_type="community")
    assert {(r["provider_type"], r["keep_type"]) for r in typed.rows} == {("community", None)}


def test_files_that_are_neither_are_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(RegistryFileError, match="neither carewatch's provider CSV"):
        read_registry(odd)
    typed = tmp_path / "providers.csv"
    typed.write_text("ods_code,name,provider_type,quality_contact_email\n"
                     "X1,X,nursing_home,q@x.example\n")
    with pytest.raises(RegistryFileError, match="line 2: provider type 'nursing_home'"):
        read_registry(typed)
    ods = tmp_path / "eother.csv"
    ods.write_text(",".join(["X"] * 27) + "\n")
    with pytest.raises(RegistryFileError, match="--type"):
        read_registry(ods, "ods")


def test_ods_names_read_as_names() -> None:
    assert ods_name("THE LEWISHAM MEDICAL CENTRE") == "The Lewisham Medical Centre"
    assert ods_name("ST MARY-LE-BOW NHS PCN") == "St Mary-Le-Bow NHS PCN"


def test_the_organiser_is_the_providers_own_icb() -> None:
    people = People.from_settings(Settings(commissioner_name="NHS North Central London ICB"))
    rows = store.read_providers_csv(store.SAMPLE_PROVIDERS)
    from shared.events import ProviderRef

    def ref(ods: str) -> ProviderRef:
        row = next(r for r in rows if r["ods_code"] == ods)
        return ProviderRef.model_validate({k: row[k] for k in (
            "ods_code", "name", "provider_type", "quality_contact_email", "icb_code", "icb_name")})

    assert people.organizer_for(ref("RJ1")).name == "NHS South East London ICB"
    assert people.organizer_for(ref("RJ1")).email == people.organizer.email
    # A provider whose ICB the registry does not know: the configured commissioner.
    assert people.organizer_for(ref("RRU")).name == "NHS North Central London ICB"


@pytest.mark.parametrize(("rating", "months"), [
    ("requires_improvement", 4), ("inadequate", 3), ("good", None), ("outstanding", None),
    ("", None)])
def test_a_visit_below_good_is_followed_up_sooner(rating: str, months: int | None) -> None:
    follow_ups = {"requires_improvement": 4, "inadequate": 3}
    assert follow_up_months(rating, follow_ups, 12) == months
    assert follow_up_months("requires_improvement", {"requires_improvement": 12}, 12) is None
