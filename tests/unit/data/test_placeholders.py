"""The NSD-shaped placeholder tree and the workflow's check of a real NSD root."""

from __future__ import annotations

import os

import pytest

from braindecode_pkg.data import layout
from braindecode_pkg.data.placeholders import placeholder_files, write_placeholders
from braindecode_pkg.errors import InputError


def test_every_subject_and_session_of_the_release_by_its_real_name(tmp_path):
    files = placeholder_files(tmp_path)
    nsd = layout.NSDPaths(tmp_path)
    betas = [p for p in files if p.name.startswith("betas_session")]
    assert len(betas) == 2 * sum(layout.NSD_SESSIONS.values()) == 2 * 284
    assert nsd.betas(8, 30, "hdf5") in files and nsd.betas(8, 31, "hdf5") not in files
    assert nsd.betas(1, 40, "nifti") in files and nsd.roi(6, "lh.nsdgeneral") in files
    # the sizes NSD_FORMAT.md gives: one subj01 session is 1.05 GB of int16, the stimuli 73k x 425 x 425 x 3
    assert files[nsd.betas(1, 1, "hdf5")] == 750 * 81 * 104 * 83 * 2 == 1_048_788_000
    assert files[nsd.stimuli] == 73000 * 425 * 425 * 3 and files[nsd.betas(1, 1, "nifti")] is None
    legacy = placeholder_files(tmp_path, subjects=(3,), sessions="legacy", formats=("hdf5",))
    assert sorted(p.name for p in legacy if p.name.startswith("betas_session"))[-1] == "betas_session29.hdf5"


def test_written_files_are_empty_or_sparse_and_never_overwrite_data(tmp_path):
    from braindecode_pkg.data.stimuli import check_image_brick, read_coco_captions

    written = write_placeholders(tmp_path / "a", subjects=(2,), formats=("hdf5",))
    a = layout.NSDPaths(tmp_path / "a")
    headers = {a.stimuli, a.captions("train2017"), a.captions("val2017")}
    assert written and all(p.stat().st_size == 0 for p in written if p not in headers)
    # the two files the workflow's parse-time checks read: NSD's image-brick layout, no images
    assert check_image_brick(a.stimuli) == (73000, 425, 425, 3) and a.stimuli.stat().st_size < 10_000
    assert read_coco_captions(a.captions("val2017")) == {}
    write_placeholders(tmp_path / "a", subjects=(2,), formats=("hdf5",))  # its own placeholders: rewritten
    nsd = layout.NSDPaths(tmp_path / "b")
    probe = tmp_path / "probe"
    with open(probe, "wb") as fh:
        os.ftruncate(fh.fileno(), 1 << 30)
    if probe.stat().st_blocks > 0:
        pytest.skip("this file system has no sparse files")
    write_placeholders(nsd.root, subjects=(2,), formats=("hdf5",), sized=True)
    b = nsd.betas(2, 40, "hdf5")
    assert b.stat().st_size == 750 * 82 * 106 * 84 * 2 and b.stat().st_blocks == 0
    nsd.expdesign.write_bytes(b"MATLAB 5.0")
    with pytest.raises(InputError, match="exists with content"):
        write_placeholders(nsd.root, subjects=(2,))


def test_bad_subject_or_format_is_refused(tmp_path):
    with pytest.raises(InputError, match="NSD has subjects 1..8"):
        placeholder_files(tmp_path, subjects=(9,))
    with pytest.raises(InputError, match="beta format"):
        placeholder_files(tmp_path, formats=("mat",))


def test_check_root_names_the_first_missing_file(tmp_path):
    write_placeholders(tmp_path, subjects=(1, 5), formats=("hdf5",))
    layout.check_root(tmp_path, [1, 5])
    layout.check_root(tmp_path, [1, 5], sessions="38-40", roi="lh.nsdgeneral:1")
    with pytest.raises(InputError, match=r"betas_session01.nii.gz: not found under the NSD root .* \(and 1 more"):
        layout.check_root(tmp_path, [1, 5], fmt="nifti")
    with pytest.raises(InputError, match=r"subj07/behav/responses.tsv: not found"):
        layout.check_root(tmp_path, [1, 7])
    with pytest.raises(InputError, match="NSD root not found"):
        layout.check_root(tmp_path / "nowhere", [1])
