"""`make app`: RUN/export/ -> RUN/app/, a static web page running the exported model in MediaPipe
Tasks Vision for the web (the npm package @mediapipe/tasks-vision, pinned in web/package-lock.json).

RUN/app/ holds everything the page needs, so it works offline and from any static server::

    index.html app.js style.css     the page (web/)
    app.json                        which models are here, and their card (RUN/export/model_card.json)
    models/model_<mode>.tflite      the exports MediaPipe's web runtime accepts (uint8 or float32 input)
    golden/                         RUN/export/golden/ (export.golden), for ?selftest=1
    vendor/tasks-vision/            vision_bundle.mjs and its WASM (SIMD and non-SIMD builds)

An export whose input tensor is int8 (INT8_IO=int8) is left out and named, with the reason, in
app.json's "rejected": MediaPipe Tasks reject int8 image inputs. The folder is built beside
RUN/app under a temporary name and renamed into place.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from common.errors import UserError
from common.run_folder import RunFolder, read_json, write_json
from export.exporter import MEDIAPIPE_INPUT_TYPES
from export.golden import GOLDEN_DIR, GOLDEN_FILE

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
PAGE_FILES = ("index.html", "app.js", "style.css")
PACKAGE = "@mediapipe/tasks-vision"
# What the page loads from the package: the ES module, and the WASM that FilesetResolver picks
# (SIMD where the browser has it). The *_module_internal build is for bundlers; not needed.
VENDOR_FILES = ("vision_bundle.mjs", "wasm/vision_wasm_internal.js", "wasm/vision_wasm_internal.wasm",
                "wasm/vision_wasm_nosimd_internal.js", "wasm/vision_wasm_nosimd_internal.wasm")
VENDOR_DIR = "vendor/tasks-vision"
APP_DIR = "app"
# The model the page opens first: what a phone app would ship.
MODE_ORDER = ("int8", "int8-qat", "float16", "dynamic", "float32")
INT8_INPUT_REASON = ("int8 input tensor (exported with INT8_IO=int8): MediaPipe Tasks reject int8 image inputs; "
                     "export with INT8_IO=uint8 (the default) for a quantized model the page can run")


def pinned_version(web_dir: Path = WEB_DIR) -> str:
    """The version of @mediapipe/tasks-vision that web/package.json pins (exactly)."""
    path = web_dir / "package.json"
    try:
        version = read_json(path)["dependencies"][PACKAGE]
    except KeyError:
        raise UserError(f"{path}: no dependency on {PACKAGE}") from None
    if not version[:1].isdigit():
        raise UserError(f"{path}: {PACKAGE} must be pinned to an exact version, not {version!r}")
    return version


def installed_package(web_dir: Path = WEB_DIR) -> Path:
    """web/node_modules/@mediapipe/tasks-vision, checked to be the pinned version and complete."""
    package = web_dir / "node_modules" / PACKAGE
    want = pinned_version(web_dir)
    if not (package / "package.json").exists():
        raise UserError(f"{package}: not installed; run `make app` (it runs `npm ci` in web/) or `cd web && npm ci`")
    have = read_json(package / "package.json").get("version")
    if have != want:
        raise UserError(f"{package}: version {have} installed but web/package.json pins {want}; run `cd web && npm ci`")
    missing = [f for f in VENDOR_FILES if not (package / f).exists()]
    if missing:
        raise UserError(f"{package}: missing {', '.join(missing)}; run `cd web && npm ci`")
    return package


def choose_models(card: dict, export_dir: Path) -> tuple[list[dict], list[dict]]:
    """(models the page can run, best first; rejected ones with a reason) from a model card."""
    accepted, rejected = [], []
    for mode, m in card["models"].items():
        if not m["passed"]:
            continue
        if not (export_dir / m["file"]).exists():
            raise UserError(f"{export_dir / m['file']}: in model_card.json but not on disk; run `make export` again")
        if m["input"]["dtype"] not in MEDIAPIPE_INPUT_TYPES:
            rejected.append({"name": m["file"], "reason": INT8_INPUT_REASON if m["input"]["dtype"] == "int8"
                             else f"{m['input']['dtype']} input tensor: MediaPipe Tasks take uint8 or float32 images"})
            continue
        accepted.append({"name": m["file"], "file": f"models/{m['file']}", "mode": mode, "input": m["input"],
                         "size_bytes": m["size_bytes"], "score": m["score"],
                         "app_score": (m.get("mediapipe") or {}).get("score"),
                         "latency_ms_python": m["latency_ms_1_thread"]["median_ms"]})
    accepted.sort(key=lambda e: MODE_ORDER.index(e["mode"]) if e["mode"] in MODE_ORDER else len(MODE_ORDER))
    return accepted, rejected


def app_manifest(run: RunFolder, card: dict, golden: dict, models: list[dict], rejected: list[dict],
                 version: str) -> dict:
    """app.json: what the page shows and runs."""
    return {
        "title": f"{run.root.name}: {'image classifier' if card['task'] == 'classify' else 'object detector'}",
        "task": card["task"],
        "data": card.get("data", ""),
        "quality": card["quality"],
        "input": {"size": int(card["input"]["shape"][1]), "color_order": card["input"].get("color_order", "RGB")},
        "runtime": {"package": PACKAGE, "version": version},
        "models": models,
        "rejected": rejected,
        "show_threshold": golden["show_threshold"],
        "sample": f"{GOLDEN_DIR}/{golden['images'][0]['png']}",
    }


def build_app(run_dir: Path, *, web_dir: Path = WEB_DIR) -> Path:
    """Build RUN/app/ from RUN/export/ (model_card.json, the models, golden/). Returns its path."""
    run = RunFolder(Path(run_dir))
    export_dir = run.export
    card_path = export_dir / "model_card.json"
    if not card_path.exists():
        raise UserError(f"{card_path}: not found; run `make export RUN={run.root}` first")
    card = read_json(card_path)
    golden_path = export_dir / GOLDEN_DIR / GOLDEN_FILE
    if not golden_path.exists():
        raise UserError(f"{golden_path}: not found (an export older than the golden vectors); "
                        f"run `make export RUN={run.root}` again")
    golden = read_json(golden_path)
    models, rejected = choose_models(card, export_dir)
    if not models:
        raise UserError(f"{export_dir}: no model the web page can run"
                        + (f" ({'; '.join(r['name'] + ': ' + r['reason'] for r in rejected)})" if rejected else ""))
    package = installed_package(web_dir)
    missing = [f for f in PAGE_FILES if not (web_dir / f).exists()]
    if missing:
        raise UserError(f"{web_dir}: missing {', '.join(missing)}")

    target = run.root / APP_DIR
    build = Path(tempfile.mkdtemp(prefix=f".{APP_DIR}.", suffix=".tmp", dir=run.root))
    try:
        for name in PAGE_FILES:
            shutil.copy2(web_dir / name, build / name)
        for name in VENDOR_FILES:
            (build / VENDOR_DIR / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(package / name, build / VENDOR_DIR / name)
        (build / "models").mkdir()
        for m in models:
            shutil.copy2(export_dir / m["name"], build / m["file"])
        shutil.copytree(export_dir / GOLDEN_DIR, build / GOLDEN_DIR)
        write_json(build / "app.json", app_manifest(run, card, golden, models, rejected, pinned_version(web_dir)))
        build.chmod(0o755)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{APP_DIR}.", suffix=".old", dir=run.root))
            target.rename(old / APP_DIR)
        build.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return target


def app_summary(app_dir: Path) -> str:
    """What `make app` prints after building: the models in the page, the ones left out, how to open it."""
    manifest = json.loads((Path(app_dir) / "app.json").read_text(encoding="utf-8"))
    lines = [f"Wrote {app_dir}: index.html, app.json, models/ ({', '.join(m['name'] for m in manifest['models'])}), "
             f"golden/, vendor/ ({PACKAGE} {manifest['runtime']['version']})"]
    for r in manifest["rejected"]:
        lines.append(f"  left out {r['name']}: {r['reason']}")
    return "\n".join(lines)
