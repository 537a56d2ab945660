"""Every reader on small fixture trees made here, in each dataset's native layout, plus the
bad-record cases, splits and spec parsing."""

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hawkeye_lite.data import (
    DataError,
    IQARecord,
    assign_splits,
    check_image,
    load_records,
    map_mos,
    parse_spec,
    split_specs,
    write_json,
)


def img(path: Path, seed: int = 0, size=(24, 16), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path, fmt)
    return path


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but holds almost no data (a bomb / a 0-pixel image)."""

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def by_id(res):
    return {r.id: r for r in res.records}


# ----------------------------------------------------------------------------- json / csv


def test_json_paper_format_deqa_format_and_jsonl(tmp_path):
    img(tmp_path / "imgs" / "a.png", 1)
    img(tmp_path / "imgs" / "b.png", 2)
    img(tmp_path / "deg" / "a_deg.png", 3)
    paper = [
        {"id": "a", "images": ["imgs/a.png"], "gt_score": 3.5, "image_deg": "deg/a_deg.png", "split": "test"},
        {"id": "b", "images": [str(tmp_path / "imgs" / "b.png")], "gt_score": 1.0, "std": 0.4, "split": "training"},
    ]
    (tmp_path / "paper.json").write_text(json.dumps(paper, indent=2))
    res = load_records(f"json:{tmp_path / 'paper.json'}")
    r = by_id(res)
    assert r["a"].mos == 3.5 and r["a"].split == "test" and r["a"].mos_range == (1.0, 5.0)
    assert r["a"].image == str((tmp_path / "imgs" / "a.png").resolve())
    assert r["a"].image_deg == str((tmp_path / "deg" / "a_deg.png").resolve())
    assert r["b"].std == pytest.approx(0.4) and r["b"].split == "train"
    assert r["a"].source.endswith("paper.json:2")  # line of the entry's opening brace

    # DeQA-Score meta: "image" (string) + gt_score + std, relative to root=
    deqa = [
        {"image": "a.png", "gt_score": 2.25, "gt_score_norm": 0.3, "std": 0.5},
        {"image": "b.png", "gt_score": 4.0, "gt_score_norm": 0.7, "std": 0.6},
    ]
    (tmp_path / "deqa.json").write_text(json.dumps(deqa))
    res = load_records(f"json:{tmp_path / 'deqa.json'}?root={tmp_path / 'imgs'}&test_frac=0.5")
    r = by_id(res)  # no id field: the image path as written is the id
    assert r["a.png"].mos == 2.25 and r["b.png"].std == pytest.approx(0.6)
    assert sorted(x.split for x in res.records) == ["test", "train"]  # seeded split, no split field

    (tmp_path / "x.jsonl").write_text(
        '{"images": ["imgs/a.png"], "gt_score": 2}\n\n{"images": ["imgs/b.png"], "gt_score": 3}\n'
    )
    res = load_records(f"json:{tmp_path / 'x.jsonl'}")
    assert [x.mos for x in res.records] == [2.0, 3.0]
    assert res.records[1].source.endswith("x.jsonl:3")


def test_json_roundtrip_through_write_json(tmp_path):
    p = img(tmp_path / "i" / "a.png")
    rec = IQARecord(
        id="a",
        image=str(p.resolve()),
        mos=3.0,
        mos_raw=50.0,
        mos_range=(0.0, 100.0),
        dataset="spaq",
        split="test",
        std=0.2,
        ref="a",
    )
    write_json([rec], tmp_path / "out" / "d.json")
    data = json.loads((tmp_path / "out" / "d.json").read_text())
    assert data[0]["images"] == ["../i/a.png"] and data[0]["gt_score"] == 3.0
    back = load_records(f"json:{tmp_path / 'out' / 'd.json'}").records[0]
    assert back.image == rec.image and back.split == "test" and back.dataset == "spaq" and back.ref == "a"


def test_invalid_json_names_file_and_line(tmp_path):
    (tmp_path / "bad.json").write_text('[\n {"images": ["a.png"], "gt_score": 3},\n {"images": oops}\n]')
    with pytest.raises(DataError, match=r"bad\.json:3: invalid JSON"):
        load_records(f"json:{tmp_path / 'bad.json'}")


def test_csv_with_columns_root_range_and_flip(tmp_path):
    for n in "abcd":
        img(tmp_path / "pics" / f"{n}.jpg", ord(n))
    (tmp_path / "scores.csv").write_text("file;quality;dev\na.jpg;0;1\nb.jpg;100;2\nc.jpg;25;\nd.jpg;75;0\n")
    spec = f"csv:{tmp_path / 'scores.csv'}?path=file&mos=quality&std=dev&root={tmp_path / 'pics'}&range=0,100"
    r = by_id(load_records(spec))
    assert r["a.jpg"].mos == 1.0 and r["b.jpg"].mos == 5.0 and r["c.jpg"].mos == 2.0
    assert r["a.jpg"].mos_raw == 0.0 and r["a.jpg"].mos_range == (0.0, 100.0)
    assert r["b.jpg"].std == pytest.approx(2 * 4 / 100) and r["c.jpg"].std is None
    # lower_better flips the scale (DMOS); auto-detected columns (image/mos) and a split column
    (tmp_path / "d.csv").write_text("image,mos,split\npics/a.jpg,0,train\npics/b.jpg,1,test\n")
    r = by_id(load_records(f"csv:{tmp_path / 'd.csv'}?range=0,1&lower_better=1"))
    assert r["pics/a.jpg"].mos == 5.0 and r["pics/b.jpg"].mos == 1.0 and r["pics/b.jpg"].split == "test"
    (tmp_path / "e.csv").write_text("foo,bar\nx,1\n")
    with pytest.raises(DataError, match=r"e\.csv:1: cannot tell which columns"):
        load_records(f"csv:{tmp_path / 'e.csv'}")
    with pytest.raises(DataError, match="no column 'nope'"):
        load_records(f"csv:{tmp_path / 'd.csv'}?mos=nope")


# ----------------------------------------------------------------------------- native layouts


def test_koniq_sets_file_and_split_column(tmp_path):
    d = tmp_path / "koniq"
    # the sets file of the authors' metadata repo: c1..c5 are rating *fractions*, its MOS column is
    # the 0-100 z-score MOS (not used), SD is already on 1-5, a set column
    rows = [
        ("1.jpg", (1, 0, 0, 0, 0), 9.0, 0.4, "training"),
        ("2.jpg", (0, 0, 0, 0, 1), 95.0, 0.3, "validation"),
        ("3.jpg", (0.1, 0.2, 0.4, 0.2, 0.1), 50.0, 1.1, "test"),
        ("4.jpg", (0, 0.5, 0.5, 0, 0), 30.0, 0.5, "training"),
    ]
    for i, (n, *_rest) in enumerate(rows):
        img(d / "1024x768" / n, i)
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    lines += [f"{n},{','.join(map(str, c))},100,{m},{sd},{s}" for n, c, m, sd, s in rows]
    (d / "koniq10k_distributions_sets.csv").write_text("\n".join(lines) + "\n")
    res = load_records(f"koniq:{d}")
    r = by_id(res)
    assert [r[n].split for n, *_ in rows] == ["train", "val", "test", "train"]
    assert r["1.jpg"].mos == 1.0 and r["2.jpg"].mos == 5.0 and r["3.jpg"].mos == pytest.approx(3.0)
    assert r["4.jpg"].mos == pytest.approx(2.5) and r["4.jpg"].mos_raw == pytest.approx(2.5)
    assert r["3.jpg"].std == pytest.approx(1.1) and r["3.jpg"].mos_range == (1.0, 5.0)  # SD not rescaled
    assert r["1.jpg"].image == str(d / "1024x768" / "1.jpg") and r["1.jpg"].dataset == "koniq"
    assert res.summaries[0].splits == {"train": 2, "val": 1, "test": 1}
    assert "sum k*c_k" in res.format() and "koniq10k_distributions_sets.csv" in res.format()
    # c1..c5 as counts (any scale of the distribution): divided by their sum
    (d / "koniq10k_distributions_sets.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n1.jpg,0,3,1,0,0,4,40,0.4,training\n"
    )
    assert load_records(f"koniq:{d}").records[0].mos == pytest.approx(2.25)
    # the scores file: MOS on 1-5 (MOS_zscore on 0-100), no set column -> seeded split
    (d / "koniq10k_distributions_sets.csv").unlink()
    (d / "koniq10k_scores_and_distributions.csv").write_text(
        "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
        "1.jpg,1,2,3,4,5,15,1.0,0.5,1.0\n2.jpg,1,2,3,4,5,15,4.6,0.4,90.0\n"
        "3.jpg,1,2,3,4,5,15,3.2,0.3,55.0\n4.jpg,1,2,3,4,5,15,2.0,0.6,25.0\n"
    )
    res = load_records(f"koniq:{d}?test_frac=0.5&seed=3")
    r = by_id(res)
    assert r["3.jpg"].mos == pytest.approx(3.2) and r["3.jpg"].std == pytest.approx(0.3)
    assert r["3.jpg"].mos_range == (1.0, 5.0)
    assert sorted(x.split for x in res.records).count("test") == 2
    assert "MOS and SD as given (1-5)" in res.format()


def test_kadid_split_by_reference_never_leaks(tmp_path):
    d = tmp_path / "kadid10k"
    lines = ["dist_img,ref_img,dmos,var"]
    for ref in range(10):
        img(d / "images" / f"I{ref:02d}.png", ref)
        for dist in range(3):
            name = f"I{ref:02d}_{dist + 1:02d}_01.png"
            img(d / "images" / name, 100 + ref * 3 + dist)
            lines.append(f"{name},I{ref:02d}.png,{1 + dist * 2},{0.25 * (dist + 1)}")
    (d / "dmos.csv").write_text("\n".join(lines) + "\n")
    res = load_records(f"kadid:{tmp_path}", test_frac=0.3, val_frac=0.2)  # finds the kadid10k/ subfolder
    assert len(res.records) == 30
    splits_of_ref = {}
    for r in res.records:
        splits_of_ref.setdefault(r.ref, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_of_ref.values()), "a reference leaked across splits"
    counts = {s: sum(1 for v in splits_of_ref.values() if s in v) for s in ("train", "val", "test")}
    assert counts == {"train": 5, "val": 2, "test": 3}
    r = by_id(res)["I03_02_01.png"]
    assert r.mos == 3.0 and r.std == pytest.approx(math.sqrt(0.5)) and r.ref == "I03.png"
    # same seed, same split; another seed, another split
    again = load_records(f"kadid:{tmp_path}", test_frac=0.3, val_frac=0.2)
    assert [x.split for x in again.records] == [x.split for x in res.records]
    other = load_records(f"kadid:{tmp_path}?seed=7", test_frac=0.3, val_frac=0.2)
    assert [x.split for x in other.records] != [x.split for x in res.records]


def test_spaq_csv_export_and_xlsx_hint(tmp_path):
    d = tmp_path / "spaq"
    for i in range(3):
        img(d / "TestImage" / f"0000{i + 1}.jpg", i, fmt="JPEG")
    (d / "Annotations").mkdir()
    (d / "Annotations" / "MOS and Image attribute scores.csv").write_text(
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        "00001.jpg,50,1,2,3,4,5\n00002.jpg,0,1,2,3,4,5\n00003.jpg,100,1,2,3,4,5\n"
    )
    r = by_id(load_records(f"spaq:{d}"))
    assert r["00001.jpg"].mos == 3.0 and r["00002.jpg"].mos == 1.0 and r["00003.jpg"].mos == 5.0
    assert r["00001.jpg"].mos_range == (0.0, 100.0)
    (d / "Annotations" / "MOS and Image attribute scores.csv").rename(
        d / "Annotations" / "MOS and Image attribute scores.xlsx"
    )
    with pytest.raises(DataError, match="export its first sheet to CSV"):
        load_records(f"spaq:{d}")


def test_livec_mat_files(tmp_path):
    import scipy.io

    d = tmp_path / "ChallengeDB_release"
    names = ["10.bmp", "11.bmp", "12.bmp"]
    for i, n in enumerate(names):
        img(d / "Images" / n, i, fmt="BMP")
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    (d / "Data").mkdir()
    scipy.io.savemat(d / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(d / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[25.0, 75.0, 100.0]])})
    scipy.io.savemat(d / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.array([[10.0, 20.0, 5.0]])})
    res = load_records(f"livec:{d}")
    r = by_id(res)
    assert r["10.bmp"].mos == 2.0 and r["11.bmp"].mos == 4.0 and r["12.bmp"].mos == 5.0
    assert r["11.bmp"].std == pytest.approx(0.8) and r["10.bmp"].source.endswith("AllImages_release.mat:entry 1")
    scipy.io.savemat(d / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[25.0, 75.0]])})
    with pytest.raises(DataError, match="differ in length"):
        load_records(f"livec:{d}")


def test_pipal_label_files_observed_range_and_reference_split(tmp_path):
    d = tmp_path / "PIPAL"
    (d / "Train_Label").mkdir(parents=True)
    for ref in range(4):
        rid = f"A{ref + 1:04d}"
        img(d / "Train_Ref" / f"{rid}.bmp", ref, fmt="BMP")
        lines = []
        for k in range(3):
            name = f"{rid}_0{k}_00.bmp"
            img(d / f"Distortion_{ref % 2 + 1}" / name, 10 * ref + k, fmt="BMP")
            lines.append(f"{name},{1000 + 100 * (ref + k)}.5")
        (d / "Train_Label" / f"{rid}.txt").write_text("\n".join(lines) + "\n")
    res = load_records(f"pipal:{d}?test_frac=0.5")
    assert len(res.records) == 12
    lo, hi = res.summaries[0].mos_range
    assert (lo, hi) == (1000.5, 1500.5)
    r = by_id(res)
    assert r["A0001_00_00.bmp"].mos == 1.0 and r["A0004_02_00.bmp"].mos == 5.0
    assert r["A0002_01_00.bmp"].image.endswith("Distortion_2/A0002_01_00.bmp")
    assert all(len({x.split for x in res.records if x.ref == g}) == 1 for g in {x.ref for x in res.records})
    assert {x.split for x in res.records} == {"train", "test"}
    fixed = load_records(f"pipal:{d}?range=0,2000").records[0]
    assert fixed.mos_range == (0.0, 2000.0)


def test_csiq_label_file_flipped_dmos(tmp_path):
    d = tmp_path / "CSIQ"
    img(d / "dst_imgs" / "awgn" / "1600.AWGN.1.png", 1)
    img(d / "dst_imgs" / "jpeg" / "1600.JPEG.5.png", 2)
    img(d / "dst_imgs" / "blur" / "cactus.BLUR.2.png", 3)
    (d / "csiq_label.txt").write_text("1600.AWGN.1.png 0.0\n1600.JPEG.5.png 1.0\ncactus.BLUR.2 0.25\n")
    r = by_id(load_records(f"csiq:{d}"))
    # DMOS 0 (no visible difference) is the best quality: 5 after the flip
    assert r["1600.AWGN.1.png"].mos == 5.0 and r["1600.JPEG.5.png"].mos == 1.0 and r["cactus.BLUR.2"].mos == 4.0
    assert r["cactus.BLUR.2"].image.endswith("dst_imgs/blur/cactus.BLUR.2.png")
    assert r["1600.AWGN.1.png"].ref == "1600" and r["1600.JPEG.5.png"].split == r["1600.AWGN.1.png"].split


def test_agiqa_data_csv_split_by_prompt(tmp_path):
    d = tmp_path / "agiqa"
    lines = ["name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align"]
    for p in range(6):
        for g in ("midjourney", "sd"):
            name = f"{g}_{p}.jpg"
            img(d / "AGIQA-3K" / name, p * 2 + (g == "sd"), fmt="JPEG")
            lines.append(f'{name},"a cat, number {p}",,,,{p * 0.5 + (g == "sd")},{0.25},3.0,0.5')
    (d / "data.csv").write_text("\n".join(lines) + "\n")
    res = load_records(f"agiqa:{d}?test_frac=0.34")
    r = by_id(res)
    assert r["midjourney_5.jpg"].mos == pytest.approx(1 + 4 * 2.5 / 5) and r["sd_0.jpg"].std == pytest.approx(0.2)
    assert r["sd_3.jpg"].ref == "a cat, number 3"
    for p in range(6):
        assert r[f"midjourney_{p}.jpg"].split == r[f"sd_{p}.jpg"].split
    assert sum(x.split == "test" for x in res.records) == 4


def test_several_specs_combined_and_forced_split(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "one.json").write_text(json.dumps([{"images": ["a.png"], "gt_score": 2}]))
    (tmp_path / "two.csv").write_text("image,mos\na.png,60\n")
    specs = f"json:{tmp_path / 'one.json'}?split=test,csv:{tmp_path / 'two.csv'}?range=0,100&split=test&name=mine"
    assert len(split_specs(specs)) == 2
    res = load_records(specs)
    assert [(r.dataset, r.mos, r.split) for r in res.records] == [("one", 2.0, "test"), ("mine", 3.4, "test")]
    res2 = load_records([f"json:{tmp_path / 'one.json'}", f"csv:{tmp_path / 'two.csv'}?range=0,100"])
    assert len(res2.records) == 2 and len(res2.summaries) == 2
    assert "one: 1 read, 1 kept" in res.format()


# ----------------------------------------------------------------------------- bad records


@pytest.fixture
def messy(tmp_path):
    """A CSV in which every line but the first two is bad in a different way."""
    d = tmp_path / "m"
    img(d / "ok1.png", 1)
    img(d / "ok2.jpg", 2, size=(64, 64), fmt="JPEG")
    full = (d / "ok2.jpg").read_bytes()
    (d / "trunc.jpg").write_bytes(full[: 2 * len(full) // 3])  # header intact, scan cut
    (d / "garbage.png").write_bytes(b"this is not an image")
    (d / "empty.png").write_bytes(b"")
    (d / "zero.png").write_bytes(png_header(0, 12))
    (d / "bomb.png").write_bytes(png_header(40000, 40000))
    img(d / "big.png", 3, size=(80, 80))
    rows = [
        ("ok1.png", "3"),
        ("ok2.jpg", "4"),
        ("missing.png", "3"),
        ("trunc.jpg", "3"),
        ("garbage.png", "3"),
        ("empty.png", "3"),
        ("zero.png", "3"),
        ("bomb.png", "3"),
        ("ok1.png", "abc"),
        ("ok2.jpg", "7.5"),
        ("ok1.png", ""),
        ("ok1.png", "nan"),
        ("ok1.png", "2"),
    ]
    (d / "m.csv").write_text("image,mos\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return d


def test_bad_records_skipped_reported_and_counted(messy):
    res = load_records(f"csv:{messy / 'm.csv'}?range=1,5")
    assert sorted(r.id for r in res.records) == ["ok1.png", "ok2.jpg"]
    bad = {b.line: b for b in res.bad}
    f = str(messy / "m.csv")
    expected = {
        4: "missing image",
        5: "truncated image",
        6: "unreadable image",
        7: "empty image",
        8: "zero-sized image",
        9: "oversized image",
        10: "non-numeric MOS",
        11: "out-of-range MOS",
        12: "non-numeric MOS",
        13: "non-numeric MOS",
        14: "duplicate",
    }
    assert {ln: b.kind for ln, b in bad.items()} == expected
    assert all(b.file == f for b in bad.values())
    assert str(bad[11]) == f"{f}:11: MOS 7.5 outside the dataset range [1, 5]"
    assert "decompression bomb" in bad[9].reason and "not found" in bad[4].reason
    s = res.summaries[0]
    assert (s.n_read, s.n_kept, len(s.bad)) == (13, 2, 11)
    text = s.format()
    assert "11 skipped" in text and "non-numeric MOS: 3" in text and f"{f}:4:" in text


def test_bad_record_fatal_with_on_bad_fail(messy):
    with pytest.raises(DataError, match=r"m\.csv:4: image file not found"):
        load_records(f"csv:{messy / 'm.csv'}?range=1,5", on_bad="fail")


def test_max_pixels_and_check_modes(messy):
    assert check_image(str(messy / "big.png"), max_pixels=1000)[0] == "oversized image"
    assert check_image(str(messy / "big.png")) is None
    assert check_image(str(messy / "trunc.jpg"), mode="header") is None  # header-only does not decode
    assert check_image(str(messy / "trunc.jpg"), mode="full")[0] == "truncated image"
    res = load_records(f"csv:{messy / 'm.csv'}?range=1,5", check_images="none")
    assert "trunc.jpg" in {r.id for r in res.records}


# ----------------------------------------------------------------------------- specs, splits, mapping


def test_spec_parsing_and_errors(tmp_path):
    s = parse_spec("csv:/x/y.csv?path=file&mos=MOS&root=/imgs")
    assert (s.kind, s.path, s.options) == ("csv", "/x/y.csv", {"path": "file", "mos": "MOS", "root": "/imgs"})
    assert parse_spec("/a/b.json").kind == "json"
    with pytest.raises(DataError, match="unknown data kind 'tid2013'"):
        parse_spec("tid2013:/x")
    with pytest.raises(DataError, match="KIND:PATH"):
        parse_spec("/x/folder")
    with pytest.raises(DataError, match="unknown option 'colour'"):
        parse_spec("koniq:/x?colour=1")
    (tmp_path / "a.csv").write_text("image,mos\n")
    with pytest.raises(DataError, match="range must be LO,HI"):
        load_records(f"csv:{tmp_path / 'a.csv'}?range=5")
    with pytest.raises(DataError, match="split must be one of"):
        load_records(f"csv:{tmp_path / 'a.csv'}?split=holdout")
    with pytest.raises(DataError, match="KonIQ-10k score CSV not found"):
        load_records(f"koniq:{tmp_path}")


def test_assign_splits_is_seeded_exact_and_order_free():
    groups = [f"g{i}" for i in range(50)]
    a = assign_splits(groups, seed=1, test_frac=0.2, val_frac=0.1)
    b = assign_splits(list(reversed(groups)) * 2, seed=1, test_frac=0.2, val_frac=0.1)
    assert a == b
    assert sum(v == "test" for v in a.values()) == 10 and sum(v == "val" for v in a.values()) == 5
    assert assign_splits(groups, seed=2, test_frac=0.2) != assign_splits(groups, seed=1, test_frac=0.2)
    assert set(assign_splits(["only"], seed=0, test_frac=0.5).values()) == {"train"}


def test_map_mos():
    assert map_mos(0, 0, 100) == 1.0 and map_mos(100, 0, 100) == 5.0 and map_mos(50, 0, 100) == 3.0
    assert map_mos(0, 0, 1, lower_better=True) == 5.0 and map_mos(1, 0, 1, lower_better=True) == 1.0


# ----------------------------------------------------------------------------- messages that must not mislead


def test_folder_or_url_is_not_reported_as_missing(tmp_path):
    (tmp_path / "d").mkdir()
    for kind in ("json", "csv", "txt", "pyiqa"):
        with pytest.raises(DataError, match=r"is a folder, but a .* is expected here"):
            load_records(f"{kind}:{tmp_path / 'd'}")
    f = tmp_path / "labels.csv"
    f.write_text("image,mos\n")
    for kind in ("koniq", "kadid", "spaq", "livec", "pipal", "csiq", "agiqa"):
        with pytest.raises(DataError, match=rf"is a file, but {kind}: expects the .* folder"):
            load_records(f"{kind}:{f}")
    for spec in (
        "https://example.org/koniq/test.json",
        "json:https://example.org/a.json",
        "hf://datasets/x/y/meta.json",
        "csv:s3://bucket/scores.csv",
        "koniq:http://host/koniq",
        "txt:hf://datasets/a/b.txt",
    ):
        with pytest.raises(
            DataError, match=r"is a [a-z0-9]+:// URL; data specs read local files only\. Download it first"
        ) as e:
            load_records(spec)
        assert "not found" not in str(e.value)
    (tmp_path / "k").mkdir()
    with pytest.raises(DataError, match=r"https://x/s\.csv is a https:// URL"):
        load_records(f"koniq:{tmp_path / 'k'}?file=https://x/s.csv")
    # inside a file: an image entry that is a folder or a URL is a bad record saying so
    (tmp_path / "img_dir.png").mkdir()
    img(tmp_path / "ok.png")
    (tmp_path / "e.json").write_text(
        json.dumps(
            [
                {"image": "img_dir.png", "gt_score": 3},
                {"image": "https://x/a.png", "gt_score": 3},
                {"image": "ok.png", "gt_score": 3},
            ]
        )
    )
    res = load_records(f"json:{tmp_path / 'e.json'}")
    assert [b.kind for b in res.bad] == ["image is a folder", "image is a URL"] and len(res.records) == 1
    # a missing file in a missing folder says so
    with pytest.raises(DataError, match=r"JSON file not found \(its folder .* does not exist either\)"):
        load_records(f"json:{tmp_path / 'nope' / 'a.json'}")


def test_unknown_kind_is_named_never_file_not_found(tmp_path):
    for spec, kind, hint in (
        ("cvs:foo.csv", "cvs", "csv"),
        ("xyz:dir", "xyz", None),
        ("koniq10k:/d/koniq", "koniq10k", "koniq"),
        ("jsn:/a/b.json?root=/x", "jsn", "json"),
        ("tid2013:/d/tid", "tid2013", None),
    ):
        with pytest.raises(DataError) as e:
            load_records(spec)
        msg = str(e.value)
        assert f"unknown data kind '{kind}' (known: json, csv, txt, pyiqa, koniq" in msg and "not found" not in msg
        assert (f"did you mean '{hint}:'" in msg) if hint else ("did you mean" not in msg)
    # in a combined spec too, and kinds are case-insensitive; a one-letter prefix is a Windows drive
    with pytest.raises(DataError, match="unknown data kind 'cvs'"):
        load_records(f"json:{tmp_path / 'a.json'},cvs:{tmp_path / 'b.csv'}")
    img(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps([{"image": "a.png", "gt_score": 3}]))
    assert len(load_records(f"JSON:{tmp_path / 'a.json'}").records) == 1
    assert parse_spec(r"C:\data\x.csv").kind == "csv" and parse_spec(r"C:\data\x.csv").path == r"C:\data\x.csv"


def test_non_utf8_label_files_name_the_line_and_the_option(tmp_path):
    img(tmp_path / "café.png", 1)
    img(tmp_path / "b.png", 2)
    (tmp_path / "l1.csv").write_bytes("image,mos\nb.png,3\ncafé.png,4\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_records(f"csv:{tmp_path / 'l1.csv'}")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'l1.csv'}:3: not valid utf-8 text (byte 0xe9 at column 4")
    assert "?encoding=latin-1" in msg and "\ufffd" not in msg and "\n" not in msg
    r = by_id(load_records(f"csv:{tmp_path / 'l1.csv'}?encoding=latin-1"))
    assert r["café.png"].mos == 4.0 and r["café.png"].image.endswith("café.png")
    # the same in a txt list, a JSON file and a native label file; cp1252; UTF-16 with a BOM is read
    (tmp_path / "l2.txt").write_bytes("b.png 3\ncafé.png 4\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l2\.txt:2: not valid utf-8"):
        load_records(f"txt:{tmp_path / 'l2.txt'}")
    assert len(load_records(f"txt:{tmp_path / 'l2.txt'}?encoding=latin-1").records) == 2
    (tmp_path / "l3.json").write_bytes(
        json.dumps([{"image": "café.png", "gt_score": 3}], ensure_ascii=False).encode("latin-1")
    )
    with pytest.raises(DataError, match=r"l3\.json:1: not valid utf-8 .*encoding=latin-1"):
        load_records(f"json:{tmp_path / 'l3.json'}")
    d = tmp_path / "PIPAL"
    (d / "Train_Label").mkdir(parents=True)
    (d / "Train_Label" / "A0001.txt").write_bytes("A0001_00_00.bmp,1500\nA0001_café.bmp,1400\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"A0001\.txt:2: not valid utf-8"):
        load_records(f"pipal:{d}")
    (tmp_path / "l4.csv").write_bytes("image,mos\n\u201cb\u201d.png,3\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"l4\.csv:2: not valid utf-8 text \(byte 0x93"):
        load_records(f"csv:{tmp_path / 'l4.csv'}")
    (tmp_path / "l5.csv").write_bytes("image,mos\ncafé.png,4\n".encode("utf-16"))
    assert by_id(load_records(f"csv:{tmp_path / 'l5.csv'}"))["café.png"].mos == 4.0
    with pytest.raises(DataError, match="unknown encoding 'latin-9x'"):
        load_records(f"csv:{tmp_path / 'l1.csv'}?encoding=latin-9x")
    # binary files are named for what they are, not as an encoding problem
    import gzip
    import zipfile

    (tmp_path / "g.json").write_bytes(gzip.compress(b"[]"))
    with pytest.raises(DataError, match=r"g\.json: is gzip-compressed"):
        load_records(f"json:{tmp_path / 'g.json'}")
    with zipfile.ZipFile(tmp_path / "s.csv", "w") as z:
        z.writestr("xl/workbook.xml", "<x/>")
    with pytest.raises(DataError, match=r"s\.csv: is a zip archive \(an \.xlsx workbook is one\)"):
        load_records(f"csv:{tmp_path / 's.csv'}")


def test_txt_reader_columns_separators_and_errors(tmp_path):
    for n in ("a b.png", "c.png"):
        img(tmp_path / "imgs" / n, len(n))
    # tab-separated: a name with a space; header line; trailing split word; CRLF; no final newline
    (tmp_path / "t.txt").write_bytes(b"name\tscore\tstd\tsplit\r\na b.png\t3.5\t0.5\ttest\r\nc.png\t2\t0.25\ttrain")
    res = load_records(f"txt:{tmp_path / 't.txt'}?root={tmp_path / 'imgs'}")
    r = by_id(res)
    assert r["a b.png"].mos == 3.5 and r["a b.png"].split == "test" and r["c.png"].std == 0.25
    assert "columns name score std split (tab-separated); line 1 read as a header" in res.format()
    # cols= with a skipped column and a full-reference list
    (tmp_path / "fr.txt").write_text("ref.png c.png x 0.25\nref.png a.png x 0.75\n")
    r = by_id(
        load_records(
            f"txt:{tmp_path / 'fr.txt'}?cols=ref,name,_,score&root={tmp_path / 'imgs'}&range=0,1&lower_better=1",
            check_images="none",
        )
    )
    assert r["c.png"].mos == 4.0 and r["c.png"].ref == "ref.png"
    with pytest.raises(DataError, match="unknown column 'quality'"):
        load_records(f"txt:{tmp_path / 'fr.txt'}?cols=name,quality")
    (tmp_path / "bad.txt").write_text("0.5 0.7\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: cannot tell the columns .*\?cols=name,score,std"):
        load_records(f"txt:{tmp_path / 'bad.txt'}")


def test_label_names_found_in_subfolders_but_never_guessed(tmp_path):
    img(tmp_path / "db" / "jp2k" / "img1.bmp", 1, fmt="BMP")
    img(tmp_path / "db" / "jpeg" / "img1.bmp", 2, fmt="BMP")
    img(tmp_path / "db" / "jpeg" / "img7.bmp", 3, fmt="BMP")
    img(tmp_path / "db" / "x" / "1024x768" / "k.jpg", 4, fmt="JPEG")
    (tmp_path / "db" / "l.txt").write_text("img7.bmp 3\nimg1.bmp 2\njpeg/img1 4\n1024x768/k.jpg 3\nnested/k.jpg 2\n")
    res = load_records(f"txt:{tmp_path / 'db' / 'l.txt'}")
    r = by_id(res)
    assert r["img7.bmp"].image == str(tmp_path / "db" / "jpeg" / "img7.bmp")  # the only img7.bmp
    assert r["jpeg/img1"].image == str(tmp_path / "db" / "jpeg" / "img1.bmp")  # extension added
    assert r["1024x768/k.jpg"].image == str(tmp_path / "db" / "x" / "1024x768" / "k.jpg")  # path suffix
    bad = {b.line: b for b in res.bad}
    assert bad[2].kind == "missing image" and bad[2].reason.endswith(str(tmp_path / "db" / "img1.bmp"))  # 2 candidates
    assert bad[5].kind == "missing image"  # k.jpg is not under nested/


def test_suite_spec_errors_and_file(tmp_path):
    with pytest.raises(DataError, match=r"root .*nope does not exist; it must be the folder"):
        load_records(f"suite:cross?root={tmp_path / 'nope'}")
    with pytest.raises(DataError, match="needs root=DIR"):
        load_records("suite:cross")
    with pytest.raises(DataError, match="unknown option 'spaqq' for suite:cross"):
        load_records(f"suite:cross?root={tmp_path}&spaqq=/y")
    with pytest.raises(DataError, match="no built-in suite 'crosss' \\(built-in: cross\\)"):
        load_records(f"suite:crosss?root={tmp_path}")
    # built-in: seven specs, the per-dataset override, seed passed on
    specs = split_specs(f"suite:cross?root={tmp_path}&spaq=/else/SPAQ&seed=4")
    assert specs[0] == f"koniq:{tmp_path / 'koniq10k'}?seed=4" and specs[1] == "spaq:/else/SPAQ?split=test&seed=4"
    assert len(specs) == 7 and all(s.split("?")[1].startswith("split=test") for s in specs[1:])
    # a suite file: one spec per line, comments, {root}
    img(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps([{"image": "a.png", "gt_score": 3}]))
    (tmp_path / "b.csv").write_text("image,mos\na.png,60\n")
    (tmp_path / "mine.txt").write_text(
        "# my protocol\njson:{root}/a.json?split=test\n\ncsv:{root}/b.csv?split=test&range=0,100  # 0-100\n"
    )
    res = load_records(f"suite:{tmp_path / 'mine.txt'}?root={tmp_path}")
    assert [(s.dataset, s.n_kept) for s in res.summaries] == [("a", 1), ("b", 1)] and res.records[
        1
    ].mos == pytest.approx(3.4)
    (tmp_path / "loop.txt").write_text(f"suite:{tmp_path / 'mine.txt'}\n")
    with pytest.raises(DataError, match="cannot include another suite"):
        load_records(f"suite:{tmp_path / 'loop.txt'}")


def test_json_one_line_list_reports_entries_and_key_variants(tmp_path):
    img(tmp_path / "a.png")
    data = [
        {"img_path": "a.png", "gt_score": "3.5"},
        {"path": "a.png", "mos": 2, "id": "dup"},
        {"image": ["a.png", "b.png"], "score": "x"},
        {"images": [], "gt_score": 3},
        {"id": "a.png->4.25", "image": "a.png"},
        7,
    ]
    (tmp_path / "q.json").write_text(json.dumps(data))  # one line, as Q-Align ships them
    res = load_records(f"json:{tmp_path / 'q.json'}")
    assert [(r.id, r.mos, r.source.rsplit(":", 1)[1]) for r in res.records] == [
        ("a.png", 3.5, "entry 1"),
        ("dup", 2.0, "entry 2"),
    ]
    assert [(b.line, b.kind) for b in res.bad] == [
        ("entry 3", "non-numeric MOS"),
        ("entry 4", "no image"),
        ("entry 5", "duplicate"),
        ("entry 6", "no image"),
    ]
    assert "score from gt_score (2), mos (1), score (1), id (name->score) (1)" in res.format()
