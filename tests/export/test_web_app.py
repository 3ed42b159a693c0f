"""The exported model in a web page (export.web_app, web/): built, served on 127.0.0.1, and run in
real headless Chromium on MediaPipe Tasks Vision for the web, whose self-test must agree with
LiteRT (Python) on every golden image: equal top-1 for the classifier; for the detector, boxes at
IoU >= 0.9 with equal classes. float32 and int8 (uint8 input) exports both.
"""
from __future__ import annotations

import json
import urllib.request

import pytest

from common.errors import UserError
from common.run_folder import read_json, write_json
from export.serve import make_server, serve_lines
from export.web_app import INT8_INPUT_REASON, VENDOR_DIR, build_app, choose_models, pinned_version
from tests.export.web_browser import FAKE_CAMERA_ARGS, chromium, require_browser, run_selftest, served


def _card(models: dict) -> dict:
    return {"models": {mode: {"file": f"model_{mode}.tflite", "passed": passed, "input": {"dtype": dtype},
                              "size_bytes": 10, "score": 0.5, "latency_ms_1_thread": {"median_ms": 1.0}}
                       for mode, (dtype, passed) in models.items()}}


def test_choose_models_puts_int8_first_and_rejects_int8_inputs_with_the_reason(tmp_path):
    for mode in ("float32", "int8", "int8-qat", "float16"):
        (tmp_path / f"model_{mode}.tflite").write_bytes(b"x")
    card = _card({"float32": ("float32", True), "int8": ("uint8", True), "int8-qat": ("int8", True),
                  "float16": ("float32", False)})
    accepted, rejected = choose_models(card, tmp_path)
    assert [m["name"] for m in accepted] == ["model_int8.tflite", "model_float32.tflite"]  # float16 failed export
    assert accepted[0]["file"] == "models/model_int8.tflite"
    assert rejected == [{"name": "model_int8-qat.tflite", "reason": INT8_INPUT_REASON}]
    assert "INT8_IO=uint8" in INT8_INPUT_REASON


def test_build_app_says_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="make export"):
        build_app(tmp_path)
    export = tmp_path / "export"
    export.mkdir()
    (export / "model_int8.tflite").write_bytes(b"x")
    write_json(export / "model_card.json", {**_card({"int8": ("int8", True)}), "task": "classify"})
    with pytest.raises(UserError, match="golden.json: not found"):
        build_app(tmp_path)
    write_json(export / "golden" / "golden.json", {})
    with pytest.raises(UserError, match="no model the web page can run.*MediaPipe Tasks reject int8"):
        build_app(tmp_path)
    assert not (tmp_path / "app").exists()


def test_npm_package_is_pinned_exactly_in_package_json_and_lockfile():
    from export.web_app import PACKAGE, WEB_DIR

    version = pinned_version()
    lock = read_json(WEB_DIR / "package-lock.json")
    assert lock["packages"][""]["dependencies"][PACKAGE] == version
    assert lock["packages"][f"node_modules/{PACKAGE}"]["version"] == version


def test_server_serves_wasm_as_wasm_on_loopback_and_refuses_a_folder_without_a_page(tmp_path):
    with pytest.raises(UserError, match="make app"):
        make_server(tmp_path)
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "a.wasm").write_bytes(b"\0asm")
    with served(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url) as r:
            assert b"hi" in r.read()
        with urllib.request.urlopen(url + "a.wasm") as r:
            assert r.headers["Content-Type"] == "application/wasm"
            assert r.headers["Cache-Control"] == "no-store"
    server = make_server(tmp_path, "127.0.0.1", 0)
    try:
        assert not any("HTTPS" in line for line in serve_lines(tmp_path, server, "127.0.0.1"))
        assert any("HTTPS" in line for line in serve_lines(tmp_path, server, "0.0.0.0"))
    finally:
        server.server_close()


@pytest.mark.heavy
def test_built_app_holds_the_page_the_models_golden_and_the_vendored_runtime(classifier_run):
    require_browser()
    app = build_app(classifier_run)
    manifest = read_json(app / "app.json")
    assert [m["name"] for m in manifest["models"]] == ["model_int8.tflite", "model_float32.tflite"]
    assert manifest["task"] == "classify" and manifest["input"]["size"] == 32
    for m in manifest["models"]:
        assert (app / m["file"]).read_bytes() == (classifier_run / "export" / m["name"]).read_bytes()
    assert (app / "golden" / "golden.json").exists() and (app / manifest["sample"]).exists()
    assert (app / VENDOR_DIR / "vision_bundle.mjs").exists()
    assert (app / VENDOR_DIR / "wasm" / "vision_wasm_internal.wasm").stat().st_size > 1_000_000
    page = (app / "index.html").read_text() + (app / "app.js").read_text()
    assert "http://" not in page.replace("http://localhost", "").replace("http://127.0.0.1", "")
    assert "https://" not in page and "connect-src 'self'" in page
    build_app(classifier_run)  # rebuilding replaces the folder, leaving no temporary behind
    assert sorted(p.name for p in classifier_run.iterdir() if p.name.startswith(".app")) == []


def _check_verdict(verdict: dict, outside: list[str], golden: dict, model: str):
    assert verdict["passed"], json.dumps(verdict, indent=1)[:3000]
    assert verdict["model"] == model and "MediaPipe Tasks Vision" in verdict["runtime"]
    assert [im["name"] for im in verdict["images"]] == [im["name"] for im in golden["images"]]
    assert all(im["agree"] and im["png_matches_pixels"] for im in verdict["images"])
    assert outside == [], f"the page requested URLs outside its folder: {outside}"


@pytest.mark.heavy
@pytest.mark.parametrize("model", ["model_int8.tflite", "model_float32.tflite"])
def test_classifier_page_self_test_agrees_with_litert_in_chromium(classifier_run, tmp_path, model):
    require_browser()
    app = build_app(classifier_run)
    golden = read_json(app / "golden" / "golden.json")
    with served(app) as url, chromium() as browser:
        verdict, outside = run_selftest(browser, url, model, screenshot=classifier_run / f"app-selftest-{model}.png")
    _check_verdict(verdict, outside, golden, model)
    for im, expected in zip(verdict["images"], golden["models"][model]):
        assert im["got"]["top_k"][0]["label"] == expected["top_k"][0]["label"]
        if model == "model_int8.tflite":  # same integer kernels: the same quantized score
            assert im["got"]["top_k"][0]["score"] == pytest.approx(expected["top_k"][0]["score"], abs=1 / 256)
    assert (classifier_run / f"app-selftest-{model}.png").stat().st_size > 10_000


@pytest.mark.heavy
@pytest.mark.parametrize("model", ["model_int8.tflite", "model_float32.tflite"])
def test_detector_page_self_test_finds_the_same_boxes_in_chromium(detector_run, tmp_path, model):
    require_browser()
    app = build_app(detector_run)
    golden = read_json(app / "golden" / "golden.json")
    assert any(d["score"] >= golden["show_threshold"] for out in golden["models"][model] for d in out["detections"]), \
        "the golden images show no detection: the detector test would compare nothing"
    with served(app) as url, chromium() as browser:
        verdict, outside = run_selftest(browser, url, model, screenshot=detector_run / f"app-selftest-{model}.png")
    _check_verdict(verdict, outside, golden, model)
    threshold = golden["show_threshold"]
    for im, expected in zip(verdict["images"], golden["models"][model]):
        shown = [d for d in expected["detections"] if d["score"] >= threshold]
        got = {(d["label"], tuple(d["pixel_box"])) for d in im["got"]["detections"]}
        # the same float box truncated the same way: the same whole-pixel box, not merely IoU >= 0.9
        assert all((d["label"], tuple(d["pixel_box"])) in got for d in shown), (im["name"], shown, got)


@pytest.mark.heavy
def test_a_model_the_page_left_out_gets_its_reason_not_a_crash(classifier_run, tmp_path):
    require_browser()
    app = build_app(classifier_run)
    manifest = read_json(app / "app.json")
    manifest["rejected"] = [{"name": "model_int8io.tflite", "reason": INT8_INPUT_REASON}]
    write_json(app / "app.json", manifest)
    with served(app) as url, chromium() as browser:
        verdict, _ = run_selftest(browser, url, "model_int8io.tflite")
    assert verdict["passed"] is False and "MediaPipe Tasks reject int8" in verdict["error"]
    assert verdict["images"] == []


@pytest.mark.heavy
def test_page_shows_a_sample_then_runs_the_model_on_every_camera_frame(classifier_run):
    require_browser()
    app = build_app(classifier_run)
    with served(app) as url, chromium(FAKE_CAMERA_ARGS) as browser:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#status.ready, #status.error", state="attached", timeout=60_000)
        assert page.text_content("#status").startswith("Ready: model_int8.tflite")
        rows = page.locator("#result-body tr").all_text_contents()
        assert len(rows) == 5, rows  # the sample image's top 5
        page.click("#camera-button")  # 127.0.0.1 is a secure context: the camera is offered
        page.wait_for_selector("#latency:has-text('average')", timeout=30_000)  # VIDEO mode, frame after frame
        assert page.text_content("#camera-button") == "Stop camera"
        assert page.locator("#result-body tr").count() == 5
