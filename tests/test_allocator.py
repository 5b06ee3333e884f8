"""The allocator record of a training step: differences over the timed steps, None on a CPU."""

import torch

from tpsbench.bench.allocator import allocator_activity, allocator_snapshot
from tpsbench.results.schema import AllocatorActivity, Raw
from tpsbench.results.typed import from_dict, to_dict


def test_activity_is_the_difference_of_cumulative_counters():
    before = {"num_alloc_retries": 2, "num_device_alloc": 40, "num_device_free": 1, "num_ooms": 0}
    after = {"num_alloc_retries": 5, "num_device_alloc": 52, "num_device_free": 9, "num_ooms": 0,
             "reserved_bytes.all.peak": 79 * 2**30}
    a = allocator_activity(before, after, steps=7)
    assert a == AllocatorActivity(steps=7, alloc_retries=3, device_allocs=12, device_frees=8, ooms=0,
                                  reserved_peak_bytes=79 * 2**30)


def test_no_snapshot_no_record():
    assert allocator_snapshot(torch.device("cpu")) is None
    assert allocator_activity(None, {"num_alloc_retries": 1}, steps=3) is None


def test_raw_round_trips_the_record_and_reads_old_files_without_it():
    a = AllocatorActivity(steps=5, alloc_retries=0, device_allocs=3, device_frees=0, ooms=0, reserved_peak_bytes=None)
    raw = from_dict(Raw, {"samples_s": [0.1], "warmup": 1, "l2_flushed": False, "timer": "cuda_event",
                          "allocator": to_dict(a)})
    assert raw.allocator == a
    old = from_dict(Raw, {"samples_s": [0.1], "warmup": 1, "l2_flushed": False, "timer": "cuda_event"})
    assert old.allocator is None


def test_run_notes_warn_when_the_allocator_retried():
    import dataclasses
    from pathlib import Path

    from tpsbench.report.run import run_notes
    from tpsbench.results.io import load_results

    root = Path(__file__).resolve().parents[1]
    doc = load_results(root / "results/h100-validation/h100-moe_1b_a390m-e2e16k.json")
    assert not any("allocator" in line for line in run_notes(doc))  # old files have no record: no warning
    loop = doc.points[0]
    record = AllocatorActivity(steps=7, alloc_retries=4, device_allocs=30, device_frees=30, ooms=0,
                               reserved_peak_bytes=None)
    doc.points[0] = dataclasses.replace(loop, raw=dataclasses.replace(loop.raw, allocator=record))
    warned = [line for line in run_notes(doc) if "allocator" in line]
    assert warned == ["WARNING: 'train step/loop @ 16384 x1': the caching allocator freed its cache and retried 4 "
                      "allocation(s) in 7 steps (each frees with a device sync): its time includes them"]
