"""Real-dataset importers (folders, FedDG, prostate, ISIC, PH2) on small files written in each exact layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dsfed.config import DataConfig
from dsfed.data.settings import FedDGSource, FoldersSource, ISICSource, MaskMapping, Pairing, PH2Source, ProstateSource
from dsfed.data.sources import build_source
from dsfed.data.sources.images import apply_mask_mapping, read_image, read_mask
from dsfed.errors import SourceError

H, W = 20, 24  # every synthetic image is 24x20 (W x H)
FIELD = "clients.x.source"
FUNDUS = DataConfig(classes=["optic_disc", "optic_cup"])
LESION = DataConfig(classes=["lesion"])
PROSTATE = DataConfig(classes=["prostate"])
LESION_VALUES = MaskMapping(values={0: [], 255: ["lesion"]})


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A (h, w, 3) uint8 image that differs per seed."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth_rgb(seed: int) -> np.ndarray:
    """A (H, W, 3) uint8 image that survives JPEG nearly unchanged (flat colour)."""
    return np.broadcast_to(np.array([40 + seed, 120, 200], np.uint8), (H, W, 3)).copy()


def fundus_mask(h: int = H, w: int = W) -> np.ndarray:
    """(h, w) FedDG grey mask: 255 background, 128 rim [4:16, 5:19], 0 cup [8:12, 9:15]."""
    mask = np.full((h, w), 255, np.uint8)
    mask[4:16, 5:19] = 128
    mask[8:12, 9:15] = 0
    return mask


def blob(top: int = 5, h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    """(h, w) grey mask: ``value`` on rows top..top+8, cols 6..18, 0 elsewhere."""
    mask = np.zeros((h, w), np.uint8)
    mask[top : top + 8, 6:18] = value
    return mask


def save(path: Path, array: np.ndarray, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def build(spec: Any, data: DataConfig, root: Path) -> Any:
    return build_source(spec, data, root, FIELD)


def raised(fn: Any) -> str:
    """The one-line message of the SourceError that ``fn()`` raises."""
    with pytest.raises(SourceError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------------
# FedDG: <path>/<domain>/{train,test}/ROIs/{image,mask}/
# --------------------------------------------------------------------------------------------------


def write_feddg(root: Path) -> Path:
    base = root / "Fundus"
    d2 = base / "Domain2"
    save(d2 / "train/ROIs/image/g0001.png", rgb(1))
    save(d2 / "train/ROIs/mask/g0001.png", fundus_mask())
    save(d2 / "train/ROIs/image/g0002.png", rgb(2))
    save(d2 / "train/ROIs/mask/g0002.bmp", fundus_mask())  # masks may be .bmp
    save(d2 / "test/ROIs/image/g0001.png", rgb(3))  # same stem as a training image
    save(d2 / "test/ROIs/mask/g0001.png", fundus_mask())
    (d2 / "train/ROIs/image/.DS_Store").write_bytes(b"junk")
    (d2 / "train/ROIs/image/Thumbs.db").write_bytes(b"junk")
    save(base / "Domain1/train/ROIs/image/n0001.png", rgb(4))
    save(base / "Domain1/train/ROIs/mask/n0001.png", fundus_mask())
    return base


def test_feddg_lists_splits_names_labels_and_files(tmp_path: Path) -> None:
    base = write_feddg(tmp_path)
    source = build(FedDGSource(kind="feddg", path=Path("Fundus"), domain="Domain2"), FUNDUS, tmp_path)
    items = source.items()
    assert [i.name for i in items] == ["test/g0001", "train/g0001", "train/g0002"]
    assert [i.split for i in items] == ["test", "train", "train"]
    assert [i.label for i in items] == [
        "Domain2/test/ROIs/image/g0001.png",
        "Domain2/train/ROIs/image/g0001.png",
        "Domain2/train/ROIs/image/g0002.png",
    ]
    d2 = base / "Domain2"
    assert items[2].files == (d2 / "train/ROIs/image/g0002.png", d2 / "train/ROIs/mask/g0002.bmp")
    assert all(p.is_absolute() for i in items for p in i.files)


def test_feddg_cup_is_disc_and_cup_rim_is_disc_background_is_neither(tmp_path: Path) -> None:
    write_feddg(tmp_path)
    source = build(FedDGSource(kind="feddg", path=tmp_path / "Fundus", domain="Domain2"), FUNDUS, tmp_path)
    for item, seed in zip(source.items(), (3, 1, 2)):
        sample = source.load(item)
        assert sample.image.dtype == np.uint8 and sample.image.shape == (H, W, 3)
        np.testing.assert_array_equal(sample.image, rgb(seed))
        assert sample.mask.dtype == bool and sample.mask.shape == (2, H, W)
        grey = fundus_mask()
        np.testing.assert_array_equal(sample.mask[0], grey != 255)  # optic_disc = rim + cup
        np.testing.assert_array_equal(sample.mask[1], grey == 0)  # optic_cup = cup
        assert sample.mask[:, 10, 10].tolist() == [True, True]  # cup
        assert sample.mask[:, 5, 6].tolist() == [True, False]  # rim
        assert sample.mask[:, 0, 0].tolist() == [False, False]  # background
    assert sample.mask[0].sum() == 12 * 14 and sample.mask[1].sum() == 4 * 6


def test_feddg_channel_order_follows_data_classes(tmp_path: Path) -> None:
    write_feddg(tmp_path)
    data = DataConfig(classes=["optic_cup", "optic_disc"])
    source = build(FedDGSource(kind="feddg", path=Path("Fundus"), domain="Domain1"), data, tmp_path)
    (item,) = source.items()
    assert item.name == "train/n0001"
    mask = source.load(item).mask
    np.testing.assert_array_equal(mask[0], fundus_mask() == 0)
    np.testing.assert_array_equal(mask[1], fundus_mask() != 255)


# --------------------------------------------------------------------------------------------------
# Prostate: <path>/<site>/{train,test}/{image,mask}/
# --------------------------------------------------------------------------------------------------


def test_prostate_grey_slices_become_rgb_and_masks_threshold_at_one(tmp_path: Path) -> None:
    base = tmp_path / "Prostate"
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    save(base / "BIDMC/train/image/case00_slice01.png", grey)
    save(base / "BIDMC/train/mask/case00_slice01.png", blob(value=1))  # label 1
    save(base / "BIDMC/test/image/case09_slice03.png", grey[::-1].copy())
    save(base / "BIDMC/test/mask/case09_slice03.png", blob(top=2, value=255))  # label 255
    save(base / "HK/train/image/x.png", grey)
    source = build(ProstateSource(kind="prostate", path=Path("Prostate"), site="BIDMC"), PROSTATE, tmp_path)
    items = source.items()
    assert [(i.name, i.split, i.label) for i in items] == [
        ("test/case09_slice03", "test", "BIDMC/test/image/case09_slice03.png"),
        ("train/case00_slice01", "train", "BIDMC/train/image/case00_slice01.png"),
    ]
    test_sample, train_sample = (source.load(i) for i in items)
    assert train_sample.image.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(train_sample.image[:, :, c], grey)
    assert train_sample.mask.shape == (1, H, W)
    np.testing.assert_array_equal(train_sample.mask[0], blob() > 0)
    np.testing.assert_array_equal(test_sample.mask[0], blob(top=2) > 0)


# --------------------------------------------------------------------------------------------------
# Generic folders
# --------------------------------------------------------------------------------------------------


def test_folders_pair_by_suffix_any_extension_ignoring_other_files(tmp_path: Path) -> None:
    base = tmp_path / "site_b"
    save(base / "images/a.png", rgb(1))
    save(base / "masks/a_mask.png", blob())
    save(base / "images/b.PNG", rgb(2))  # extensions are case-insensitive
    save(base / "masks/b_mask.bmp", blob(top=2))
    save(base / "images/c.tif", rgb(3))
    save(base / "masks/c_mask.tiff", blob(top=9))
    (base / "images/notes.txt").write_text("not an image")
    (base / "images/.hidden.png").write_bytes(b"junk")
    spec = FoldersSource(kind="folders", path=Path("site_b"), mask_mapping=LESION_VALUES)
    source = build(spec, LESION, tmp_path)
    items = source.items()
    assert [i.name for i in items] == ["a", "b", "c"]
    assert [i.label for i in items] == ["images/a.png", "images/b.PNG", "images/c.tif"]
    assert [i.split for i in items] == [None, None, None]
    assert items[1].files == (base / "images/b.PNG", base / "masks/b_mask.bmp")
    for item, seed, top in zip(items, (1, 2, 3), (5, 2, 9)):
        sample = source.load(item)
        np.testing.assert_array_equal(sample.image, rgb(seed))
        np.testing.assert_array_equal(sample.mask, (blob(top) > 0)[None])


def test_folders_pair_by_regex_ids(tmp_path: Path) -> None:
    base = tmp_path / "data"
    save(base / "img/img_001.png", rgb(1))
    save(base / "img/img_002.png", rgb(2))
    save(base / "img/readme.png", rgb(9))  # does not match image_regex: ignored
    save(base / "seg/seg-002.png", blob(top=1))
    save(base / "seg/seg-001.png", blob(top=7))
    pairing = Pairing(image_regex=r"^img_(?P<id>\d+)\.png$", mask_regex=r"^seg-(?P<id>\d+)\.png$")
    spec = FoldersSource(
        kind="folders", path=base, images="img", masks="seg", pairing=pairing, mask_mapping=LESION_VALUES
    )
    source = build(spec, LESION, tmp_path)
    items = source.items()
    assert [(i.name, i.files[1].name) for i in items] == [("001", "seg-001.png"), ("002", "seg-002.png")]
    np.testing.assert_array_equal(source.load(items[0]).mask[0], blob(top=7) > 0)


def test_folders_pair_equal_file_names_in_two_folders(tmp_path: Path) -> None:
    """The most common layout of real datasets: ``images/case1.png`` and ``masks/case1.png``."""
    base = tmp_path / "lesions"
    save(base / "images/case1.png", rgb(1))
    save(base / "images/case2.jpg", rgb(2))
    save(base / "masks/case1.png", blob(top=3))
    save(base / "masks/case2.png", blob(top=8))
    spec = FoldersSource(kind="folders", path=base, pairing=Pairing(mask_suffix=""), mask_mapping=MaskMapping(threshold=128))
    source = build(spec, LESION, tmp_path)
    items = source.items()
    assert [(i.name, i.files[1].name) for i in items] == [("case1", "case1.png"), ("case2", "case2.png")]
    np.testing.assert_array_equal(source.load(items[1]).mask[0], blob(top=8) > 0)
    with pytest.raises(ValueError, match="every image would pair with itself"):
        FoldersSource(kind="folders", path=base, images="all", masks="all", pairing=Pairing(mask_suffix=""),
                      mask_mapping=LESION_VALUES)


def test_folders_jpeg_masks_need_the_threshold(tmp_path: Path) -> None:
    base = tmp_path / "jpg"
    save(base / "images/a.jpg", smooth_rgb(1), quality=90)
    save(base / "masks/a_mask.jpg", blob(), quality=90)
    assert len(np.unique(np.asarray(Image.open(base / "masks/a_mask.jpg")))) > 2  # JPEG noise
    by_values = build(FoldersSource(kind="folders", path=base, mask_mapping=LESION_VALUES), LESION, tmp_path)
    message = raised(lambda: by_values.load(by_values.items()[0]))
    assert message.startswith(f"{base / 'masks/a_mask.jpg'}: mask values [")
    by_threshold = build(
        FoldersSource(kind="folders", path=base, mask_mapping=MaskMapping(threshold=128)), LESION, tmp_path
    )
    sample = by_threshold.load(by_threshold.items()[0])
    np.testing.assert_array_equal(sample.mask, (blob() > 0)[None])
    assert np.abs(sample.image.astype(int) - smooth_rgb(1)).max() <= 3


# --------------------------------------------------------------------------------------------------
# ISIC and PH2
# --------------------------------------------------------------------------------------------------


def test_isic_jpg_images_with_png_segmentations(tmp_path: Path) -> None:
    base = tmp_path / "ISIC2018"
    images, masks = base / "ISIC2018_Task1-2_Training_Input", base / "ISIC2018_Task1_Training_GroundTruth"
    save(images / "ISIC_0000000.jpg", smooth_rgb(0), quality=90)
    save(images / "ISIC_0000001.jpg", smooth_rgb(1), quality=90)
    save(images / "ISIC_0000001_superpixels.png", rgb(5))  # ISIC 2017 extra: not a sample
    (images / "LICENSE.txt").write_text("CC")
    save(masks / "ISIC_0000000_segmentation.png", blob())
    save(masks / "ISIC_0000001_Segmentation.png", blob(top=3))  # ISIC 2016 capitalisation
    source = build(ISICSource(kind="isic", path=Path("ISIC2018")), LESION, tmp_path)
    items = source.items()
    assert [i.name for i in items] == ["ISIC_0000000", "ISIC_0000001"]
    assert items[0].label == "ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg"
    assert items[1].files == (images / "ISIC_0000001.jpg", masks / "ISIC_0000001_Segmentation.png")
    for item, top in zip(items, (5, 3)):
        sample = source.load(item)
        assert sample.image.shape == (H, W, 3)
        np.testing.assert_array_equal(sample.mask, (blob(top) > 0)[None])


@pytest.mark.parametrize("top", ["", "PH2 Dataset images"])
def test_ph2_bmp_cases_directly_or_under_the_archive_folder(tmp_path: Path, top: str) -> None:
    base = tmp_path / "PH2Dataset"
    cases = base / top if top else base
    for n, (case_id, row) in enumerate((("IMD002", 5), ("IMD003", 1))):
        save(cases / f"{case_id}/{case_id}_Dermoscopic_Image/{case_id}.bmp", rgb(n))
        save(cases / f"{case_id}/{case_id}_lesion/{case_id}_lesion.bmp", blob(top=row))
        save(cases / f"{case_id}/{case_id}_roi/{case_id}_R1_Label4.bmp", blob())  # extra folder: ignored
    (base / "PH2_dataset.txt").write_text("table")
    source = build(PH2Source(kind="ph2", path=Path("PH2Dataset")), LESION, tmp_path)
    items = source.items()
    assert [i.name for i in items] == ["IMD002", "IMD003"]
    prefix = f"{top}/" if top else ""
    assert items[0].label == f"{prefix}IMD002/IMD002_Dermoscopic_Image/IMD002.bmp"
    assert items[1].files == (
        cases / "IMD003/IMD003_Dermoscopic_Image/IMD003.bmp",
        cases / "IMD003/IMD003_lesion/IMD003_lesion.bmp",
    )
    for n, (item, row) in enumerate(zip(items, (5, 1))):
        sample = source.load(item)
        np.testing.assert_array_equal(sample.image, rgb(n))
        np.testing.assert_array_equal(sample.mask, (blob(row) > 0)[None])


# --------------------------------------------------------------------------------------------------
# Bad input: one-line messages that name the file or field
# --------------------------------------------------------------------------------------------------


def folders_case(tmp_path: Path, mask_mapping: MaskMapping = LESION_VALUES) -> tuple[Path, Any]:
    """A valid two-sample folders source at tmp_path/site; tests then break it."""
    base = tmp_path / "site"
    for stem, seed in (("a", 1), ("b", 2)):
        save(base / f"images/{stem}.png", rgb(seed))
        save(base / f"masks/{stem}_mask.png", blob())
    return base, build(FoldersSource(kind="folders", path=Path("site"), mask_mapping=mask_mapping), LESION, tmp_path)


def _corrupt_image(base: Path) -> tuple[str, str]:
    (base / "images/b.png").write_bytes(b"this is not a png at all")
    return "load", f"{base / 'images/b.png'}: cannot read image ("


def _truncated_image(base: Path) -> tuple[str, str]:
    path = base / "images/b.png"
    save(path, rgb(7, 200, 200))
    path.write_bytes(path.read_bytes()[:2000])
    return "load", f"{path}: cannot read image ("


def _corrupt_mask(base: Path) -> tuple[str, str]:
    (base / "masks/b_mask.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    return "load", f"{base / 'masks/b_mask.png'}: cannot read mask ("


def _size_mismatch(base: Path) -> tuple[str, str]:
    save(base / "masks/b_mask.png", blob(h=H + 1))
    return "load", f"{base / 'masks/b_mask.png'}: mask is 24x21 but image {base / 'images/b.png'} is 24x20"


def _missing_mask(base: Path) -> tuple[str, str]:
    (base / "masks/b_mask.png").unlink()
    return "items", f"{base / 'images/b.png'}: no mask found (expected {base / 'masks'}/b_mask.*)"


def _two_masks(base: Path) -> tuple[str, str]:
    save(base / "masks/b_mask.bmp", blob())
    return "items", f"{base / 'images/b.png'}: 2 masks match ({base / 'masks/b_mask.bmp'}, {base / 'masks/b_mask.png'})"


def _duplicate_id(base: Path) -> tuple[str, str]:
    save(base / "images/b.jpg", rgb(3))
    return "items", f"{base / 'images/b.png'}: sample id 'b' is also used by {base / 'images/b.jpg'}"


def _values_outside_mapping(base: Path) -> tuple[str, str]:
    mask = blob()
    mask[0, :7] = [3, 77, 90, 100, 101, 102, 103]
    save(base / "masks/b_mask.png", mask)
    return "load", (
        f"{base / 'masks/b_mask.png'}: mask values [3, 77, 90, 100, 101, ... (7 values)] "
        "are not in mask_mapping.values (known: 0, 255)"
    )


def _empty_images(base: Path) -> tuple[str, str]:
    for p in (base / "images").iterdir():
        p.unlink()
    (base / "images/.DS_Store").write_bytes(b"")
    return "items", f"{base / 'images'}: no images found (.png, .jpg, .jpeg, .bmp, .tif, .tiff)"


def _missing_path(base: Path) -> tuple[str, str]:
    base.rename(base.with_name("elsewhere"))
    return "items", f"{FIELD}.path: folder does not exist ({base})"


def _missing_masks_folder(base: Path) -> tuple[str, str]:
    for p in (base / "masks").iterdir():
        p.unlink()
    (base / "masks").rmdir()
    return "items", f"{FIELD}.masks: folder does not exist ({base / 'masks'})"


@pytest.mark.parametrize(
    "breaker",
    [
        _corrupt_image,
        _truncated_image,
        _corrupt_mask,
        _size_mismatch,
        _missing_mask,
        _two_masks,
        _duplicate_id,
        _values_outside_mapping,
        _empty_images,
        _missing_path,
        _missing_masks_folder,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_folders_bad_input_messages(tmp_path: Path, breaker: Any) -> None:
    base, source = folders_case(tmp_path)
    good = source.items()
    source.load(good[0])  # the unbroken case reads
    when, expected = breaker(base)
    if when == "load":
        message = raised(lambda: [source.load(i) for i in source.items()])
    else:
        message = raised(source.items)
    assert message == expected or message.startswith(expected), message


def test_feddg_values_outside_mapping_name_the_mask(tmp_path: Path) -> None:
    base = write_feddg(tmp_path)
    mask = fundus_mask()
    mask[0, 0] = 77
    bad = save(base / "Domain2/train/ROIs/mask/g0001.png", mask)
    source = build(FedDGSource(kind="feddg", path=Path("Fundus"), domain="Domain2"), FUNDUS, tmp_path)
    item = next(i for i in source.items() if i.name == "train/g0001")
    assert raised(lambda: source.load(item)) == (
        f"{bad}: mask values [77] are not in mask_mapping.values (known: 0, 128, 255)"
    )
    tolerant = FedDGSource(
        kind="feddg",
        path=Path("Fundus"),
        domain="Domain2",
        mask_mapping=MaskMapping(values={0: ["optic_disc", "optic_cup"], 128: ["optic_disc"], 255: []}, tolerance=64),
    )
    assert build(tolerant, FUNDUS, tmp_path).load(item).mask[:, 0, 0].tolist() == [True, False]  # 77 ~ 128


def test_feddg_missing_domain_lists_available(tmp_path: Path) -> None:
    base = write_feddg(tmp_path)
    source = build(FedDGSource(kind="feddg", path=Path("Fundus"), domain="Domain9"), FUNDUS, tmp_path)
    assert raised(source.items) == f"{FIELD}.domain: no domain 'Domain9' in {base} (available: Domain1, Domain2)"


def test_feddg_missing_mask_and_missing_path(tmp_path: Path) -> None:
    base = write_feddg(tmp_path)
    (base / "Domain2/test/ROIs/mask/g0001.png").unlink()
    source = build(FedDGSource(kind="feddg", path=Path("Fundus"), domain="Domain2"), FUNDUS, tmp_path)
    image, masks = base / "Domain2/test/ROIs/image/g0001.png", base / "Domain2/test/ROIs/mask"
    assert raised(source.items) == f"{image}: no mask found (expected {masks}/g0001.*)"
    gone = build(FedDGSource(kind="feddg", path=Path("nowhere"), domain="Domain2"), FUNDUS, tmp_path)
    assert raised(gone.items) == f"{FIELD}.path: folder does not exist ({tmp_path / 'nowhere'})"


def test_prostate_missing_site_lists_available(tmp_path: Path) -> None:
    base = tmp_path / "Prostate"
    for site in ("BIDMC", "HK", "I2CVB"):
        save(base / f"{site}/train/image/s.png", blob())
        save(base / f"{site}/train/mask/s.png", blob())
    source = build(ProstateSource(kind="prostate", path=base, site="UCL"), PROSTATE, tmp_path)
    assert raised(source.items) == f"{FIELD}.site: no site 'UCL' in {base} (available: BIDMC, HK, I2CVB)"


def test_isic_and_ph2_missing_masks_name_the_expected_file(tmp_path: Path) -> None:
    isic = tmp_path / "isic"
    save(isic / "in/ISIC_0000007.jpg", smooth_rgb(0))
    (isic / "gt").mkdir()
    source = build(ISICSource(kind="isic", path=isic, images="in", masks="gt"), LESION, tmp_path)
    assert raised(source.items) == (
        f"{isic / 'in/ISIC_0000007.jpg'}: no mask found (expected {isic / 'gt'}/ISIC_0000007_segmentation.png)"
    )
    ph2 = tmp_path / "ph2"
    image = save(ph2 / "IMD004/IMD004_Dermoscopic_Image/IMD004.bmp", rgb(0))
    source = build(PH2Source(kind="ph2", path=ph2), LESION, tmp_path)
    assert raised(source.items) == (
        f"{image}: no mask found (expected {ph2 / 'IMD004/IMD004_lesion'}/IMD004_lesion.bmp)"
    )
    (ph2 / "IMD004").rename(ph2 / "other")
    assert raised(source.items).startswith(f"{FIELD}.path: no PH2 cases in {ph2} (expected")


def test_mapping_must_fit_data_classes_at_build_time(tmp_path: Path) -> None:
    spec = FoldersSource(kind="folders", path=tmp_path, mask_mapping=MaskMapping(threshold=128))
    assert raised(lambda: build(spec, FUNDUS, tmp_path)).startswith(
        f"{FIELD}.mask_mapping.threshold: a threshold gives one class, but data.classes has 2"
    )
    fundus = FedDGSource(kind="feddg", path=tmp_path, domain="D")
    assert raised(lambda: build(fundus, LESION, tmp_path)) == (
        f"{FIELD}.mask_mapping.values: unknown classes ['optic_cup', 'optic_disc'] (data.classes: lesion)"
    )


# --------------------------------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------------------------------


def _grey_l() -> Image.Image:
    return Image.fromarray(np.full((H, W), 90, np.uint8))


def _palette() -> Image.Image:
    return Image.fromarray(np.full((H, W, 3), [90, 90, 90], np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)


def _rgba() -> Image.Image:
    return Image.fromarray(np.dstack([np.full((H, W, 3), 90, np.uint8), np.zeros((H, W), np.uint8)]))


def _grey16_small() -> Image.Image:
    return Image.fromarray(np.full((H, W), 90, np.uint16))


@pytest.mark.parametrize("make", [_grey_l, _palette, _rgba, _grey16_small], ids=lambda f: f.__name__.strip("_"))
def test_read_image_converts_modes_to_rgb(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "x.png"
    make().save(path)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert (image == 90).all()


def test_read_image_stretches_wide_16_bit(tmp_path: Path) -> None:
    grey = np.zeros((H, W), np.uint16)
    grey[:, W // 2 :] = 4000
    Image.fromarray(grey).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image[0, 0].tolist() == [0, 0, 0] and image[0, -1].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("mode", "stored", "grey"),
    [
        ("L", 128, 128),
        ("1", 1, 255),
        ("RGB", (128, 128, 128), 128),
        ("RGB", (255, 0, 0), 76),  # coloured: luminance
        ("I;16", 65535, 255),
        ("I;16", 2, 2),
    ],
)
def test_read_mask_converts_to_grey(tmp_path: Path, mode: str, stored: Any, grey: int) -> None:
    path = tmp_path / "m.png"
    Image.new(mode, (W, H), stored).save(path)
    mask = read_mask(path)
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    assert (mask == grey).all(), np.unique(mask)


def test_apply_mask_mapping_tolerance_and_ties() -> None:
    mapping = MaskMapping(values={0: ["a", "b"], 10: ["a"]}, tolerance=5)
    grey = np.array([[0, 4, 5, 6, 10, 15]], np.uint8)
    mask = apply_mask_mapping(grey, mapping, ["a", "b"], Path("m.png"))
    assert mask.shape == (2, 1, 6)
    assert mask[0].tolist() == [[True] * 6]
    assert mask[1].tolist() == [[True, True, True, False, False, False]]  # 5 ties 0 and 10: lower key
    with pytest.raises(SourceError, match=r"m.png: mask values \[16\] are not in mask_mapping.values"):
        apply_mask_mapping(np.array([[16]], np.uint8), mapping, ["a", "b"], Path("m.png"))
