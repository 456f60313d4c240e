"""The demo wiring on a tiny setting (the full demo's mIoU is measured in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

from geoseg.demo import DemoOptions, run_demo


def test_demo_runs_end_to_end_then_reuses_what_it_made(tmp_path):
    options = DemoOptions(scenes=3, size=256, epochs=1, steps_per_epoch=2, batch_size=2, tile=128)
    first = run_demo(tmp_path, options)
    assert first.trained is not None and first.prediction is not None
    for path in first.outputs:
        assert path.exists(), path
    scores = json.loads(first.report_path.read_text())
    assert 0.0 <= scores["miou"] <= 1.0
    model_bytes = first.model.read_bytes()

    second = run_demo(tmp_path, options)
    assert second.trained is None  # the model was reused
    assert second.prediction is None  # so was the prediction
    assert second.model.read_bytes() == model_bytes
    assert second.report.miou == first.report.miou
