"""dwca.zip: written from a table made in the test and read back with python-dwca-reader; then --darwin_core on
the real timestamped crops (skipped when ../shared/data is absent)."""
from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest

from conftest import PALETTE, draw_crop
from crop_cluster.dedup.exact import file_digest
from crop_cluster.outputs.darwin_core import ID_PREFIX, DarwinCoreError, write_darwin_core

dwca_read = pytest.importorskip("dwca.read", reason="python-dwca-reader is a dev dependency (pip install -e .[dev])")
OCC = "http://rs.tdwg.org/dwc/terms/"


def occurrences(path):
    """{occurrenceID: {term: value}} and {occurrenceID: [media rows]} of the archive, read with python-dwca-reader."""
    with dwca_read.DwCAReader(str(path)) as archive:
        assert archive.metadata is not None and archive.metadata.find("dataset/title") is not None
        records, media = {}, {}
        for row in archive:
            values = {term.rsplit("/", 1)[-1]: value for term, value in row.data.items()}
            records[row.id] = values
            media[row.id] = [{t.rsplit("/", 1)[-1]: v for t, v in ext.data.items()} for ext in row.extensions]
        return records, media


def small_table(tmp_path):
    """Three individuals: one of two crops (two frames, cluster 0, reviewed as 'Noctua A' by ana), one single crop
    in cluster 0, one not clustered; site/night metadata; a hierarchical classifier's taxon on cluster 0."""
    files = [draw_crop(tmp_path / f"crop{k}.png", PALETTE[k % 3], seed=k) for k in range(4)]
    table = pd.DataFrame({
        "filename": [str(f) for f in files], "cluster": [0, 0, 0, -1], "cluster_size": [2, 2, 2, 1],
        "sim_to_centroid": [0.9, 0.9, 0.8, 1.0], "individual": [0, 0, 1, 2],
        "representative": [False, True, True, True],
        "timestamp": ["2023-09-08T00:16:19", "2023-09-08T00:16:17", "2023-09-08T01:00:00", ""],
        "group": ["Noctua A", "Noctua A", "", ""], "site": ["trapA"] * 4, "night": ["2023-09-07"] * 4,
        "cluster_taxon": ["Noctuidae", "Noctuidae", "Noctuidae", ""],
        "cluster_taxon_level": ["family", "family", "family", ""],
        "cluster_name": ["Noctuidae sp. 0", "Noctuidae sp. 0", "Noctuidae sp. 0", ""]})
    return table, files


def test_archive_reads_back_one_occurrence_per_individual(tmp_path):
    table, files = small_table(tmp_path)
    decisions = pd.DataFrame({"filename": [str(files[0])], "reviewer": ["ana"], "time": ["2024-05-01T10:00:00Z"]})
    counts = write_darwin_core(str(tmp_path / "dwca.zip"), table, "trap A", decisions=decisions,
                               remarks="crop-cluster, model dino, threshold 0.8")
    assert counts == {"occurrences": 3, "media": 3, "human": 1, "machine": 2}
    records, media = occurrences(tmp_path / "dwca.zip")
    # the earliest crop of individual 0 is crop1 (00:16:17), so its digest is the id
    first = records[ID_PREFIX + file_digest(str(files[1]))]
    assert first["basisOfRecord"] == "HumanObservation"
    assert first["eventDate"] == "2023-09-08T00:16:17/2023-09-08T00:16:19"
    assert first["eventID"] == "trapA/2023-09-07" and first["individualCount"] == "1"
    assert (first["scientificName"], first["taxonRank"], first["verbatimIdentification"]) == \
        ("Noctuidae", "family", "Noctua A")
    assert (first["identifiedBy"], first["dateIdentified"]) == ("ana", "2024-05-01T10:00:00Z")
    assert first["occurrenceRemarks"] == "2 crops"
    second = records[ID_PREFIX + file_digest(str(files[2]))]
    assert (second["basisOfRecord"], second["verbatimIdentification"], second["eventDate"]) == \
        ("MachineObservation", "Noctuidae sp. 0", "2023-09-08T01:00:00")
    assert second["identificationRemarks"] == "crop-cluster, model dino, threshold 0.8"
    third = records[ID_PREFIX + file_digest(str(files[3]))]
    assert (third["scientificName"], third["taxonRank"], third["verbatimIdentification"], third["eventDate"]) == \
        ("Insecta", "class", "", "")
    # the representative crop travels in the archive, byte for byte
    with zipfile.ZipFile(tmp_path / "dwca.zip") as archive:
        (medium,) = media[ID_PREFIX + file_digest(str(files[1]))]
        assert medium["type"] == "StillImage" and medium["format"] == "image/png"
        assert archive.read(medium["identifier"]) == files[1].read_bytes()   # crop1 is individual 0's representative


def test_names_from_references_are_unverified_and_reviewers_names_verified(tmp_path):
    table, files = small_table(tmp_path)
    table = table.drop(columns=["cluster_taxon", "cluster_taxon_level", "cluster_name"]).assign(
        ref_name=["Noctua pronuba", "Noctua pronuba", "Noctuidae sp.", "red moth"],
        ref_rank=["species", "species", "family", ""], ref_status=["conflict", "conflict", "rolled_up", "named"],
        ref_score=[0.9, 0.9, 0.85, 0.88], ref_margin=[0.2, 0.2, 0.01, 0.3])
    write_darwin_core(str(tmp_path / "dwca.zip"), table, "trap A", remarks="crop-cluster, model lite0")
    records, _ = occurrences(tmp_path / "dwca.zip")
    reviewed = records[ID_PREFIX + file_digest(str(files[1]))]
    assert (reviewed["verbatimIdentification"], reviewed["identificationVerificationStatus"]) == \
        ("Noctua A", "verified")
    assert reviewed["identificationRemarks"] == ""
    rolled = records[ID_PREFIX + file_digest(str(files[2]))]
    assert (rolled["scientificName"], rolled["taxonRank"], rolled["verbatimIdentification"]) == \
        ("Noctuidae", "family", "Noctuidae sp.")
    assert rolled["identificationVerificationStatus"] == "unverified" and rolled["basisOfRecord"] == \
        "MachineObservation"
    assert rolled["identificationRemarks"].startswith("named from references (rolled_up: cosine 0.85, margin 0.01)")
    gallery = records[ID_PREFIX + file_digest(str(files[3]))]
    assert (gallery["scientificName"], gallery["taxonRank"], gallery["verbatimIdentification"]) == \
        ("Insecta", "class", "red moth")                          # a gallery name without a rank: verbatim only


def test_stable_ids_come_from_the_occurrence_id_column_and_must_be_unique(tmp_path):
    table, _ = small_table(tmp_path)
    table["occurrence_id"] = ["trapA:1", "trapA:1", "trapA:2", "trapA:3"]
    write_darwin_core(str(tmp_path / "dwca.zip"), table, "trap A")
    assert sorted(occurrences(tmp_path / "dwca.zip")[0]) == ["trapA:1", "trapA:2", "trapA:3"]
    table["occurrence_id"] = ["trapA:1", "trapA:1", "trapA:1", "trapA:3"]
    with pytest.raises(DarwinCoreError, match="trapA:1 is given to two individuals"):
        write_darwin_core(str(tmp_path / "again.zip"), table, "trap A")
    assert not (tmp_path / "again.zip").exists()
    with pytest.raises(DarwinCoreError, match="event column.*moon"):
        write_darwin_core(str(tmp_path / "again.zip"), table, "trap A", event_columns=["moon"])


def test_darwin_core_on_the_real_timestamped_crops(shared_crops, tmp_path, fake_backend):
    from crop_cluster.cli import main

    metadata = tmp_path / "metadata.csv"
    pd.DataFrame({"filename": sorted(p.name for p in shared_crops.iterdir()), "site": "trapA",
                  "night": "2023-09-07"}).to_csv(metadata, index=False)
    out = tmp_path / "out"
    assert main(["-i", str(shared_crops), "-o", str(out), "-e", fake_backend, "-q", "--time_format",
                         "%Y%m%d%H%M%S", "--metadata", str(metadata), "--darwin_core", "--no-report"]) == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    records, media = occurrences(out / "dwca.zip")
    assert len(records) == table.individual.nunique() and len(records) < len(table)   # crops linked into individuals
    assert all(value["individualCount"] == "1" for value in records.values())
    assert {value["eventID"] for value in records.values()} == {"trapA/2023-09-07"}
    stamps = set(table.timestamp)
    for value in records.values():
        ends = value["eventDate"].split("/")
        assert all(end in stamps and dt_parse(end) for end in ends) and ends == sorted(ends)
        assert value["basisOfRecord"] == "MachineObservation" and value["scientificName"] == "Insecta"
    key = json.loads((out / "run.json").read_text())["campaign"]["key"]
    assert sorted(records) == sorted(f"urn:crop-cluster:{key}:occurrence:{individual}"
                                     for individual in table.individual.unique())
    representative = set(table.filename[table.representative])
    with zipfile.ZipFile(out / "dwca.zip") as archive:
        names = set(archive.namelist())
        for occurrence_id, rows in media.items():
            (medium,) = rows
            assert medium["identifier"] in names and medium["format"] == "image/png"
            assert any(archive.read(medium["identifier"]) == open(f, "rb").read() for f in representative
                       if f.endswith(medium["title"]))
    assert json.loads((out / "run.json").read_text())["darwin_core"]["occurrences"] == len(records)


def dt_parse(text: str):
    import datetime

    return datetime.datetime.fromisoformat(text)


def test_occurrence_ids_survive_a_new_night_added_to_the_campaign(tmp_path, fake_backend):
    """occurrenceID = the campaign's key + the store's stable individual id: the same for night 1's individuals
    after night 2 joins with --add, and unique across both nights."""
    from crop_cluster.cli import main

    for night in (1, 2):
        for colour in range(3):
            for view in range(2):
                draw_crop(tmp_path / f"night{night}" / f"n{night}_c{colour}_v{view}.png", PALETTE[colour],
                          seed=100 * night + 10 * colour + view)
    out = tmp_path / "out"
    common = ["-o", str(out), "-e", fake_backend, "-q", "--darwin_core", "--no-report"]
    assert main(["-i", str(tmp_path / "night1"), *common]) == 0
    first, _ = occurrences(out / "dwca.zip")
    key = json.loads((out / "run.json").read_text())["campaign"]["key"]
    assert main(["-i", str(tmp_path / "night2"), "--add", *common]) == 0
    second, _ = occurrences(out / "dwca.zip")
    assert json.loads((out / "run.json").read_text())["campaign"]["key"] == key
    assert set(first) < set(second) and all(i.startswith(f"urn:crop-cluster:{key}:occurrence:") for i in second)
    table = pd.read_csv(out / "clusters.csv")
    assert len(second) == table.individual.nunique()
