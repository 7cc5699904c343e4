"""The model zoo: a name maps to a folder ``<name>/`` holding ``config.json`` and the weights.

``config.json`` has the architecture (``config``), how the model was trained (``training``), its measured
amortized R-D on Kodak (``evaluation``) and the weights fingerprint written into every file it codes.

Folders are searched in this order: an explicit path, ``$TFC_INFERENCE_CHECKPOINTS`` (``os.pathsep``-separated),
the repository's ``checkpoints/`` (beside the package in a source / editable install) and ``./checkpoints``.
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from tfc_inference.errors import ModelError, ModelNotFoundError

WEIGHTS_PREFIX = "weights"
CONFIG_FILE = "config.json"
#: The entropy coder's tables, computed once when the checkpoint is saved, so that every machine codes with the
#: same integers (recomputing them from the weights differs in the last bits between CPU kernels).
TABLES_FILE = "coding_tables.npz"
#: Whether :func:`save_checkpoint` freezes the tables (it costs seconds, for a bits-back model a minute, since the
#: prior's tails are estimated); the test suite turns it off for its throw-away checkpoints.
FREEZE_TABLES = True
_CACHE: Dict[str, Any] = {}


def search_dirs() -> List[Path]:
    dirs = [Path(p) for p in os.environ.get("TFC_INFERENCE_CHECKPOINTS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "checkpoints")
    dirs.append(Path.cwd() / "checkpoints")
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / f"{WEIGHTS_PREFIX}.index").is_file()


def is_plain_name(name: str) -> bool:
    """A zoo name (no path): what a compressed file may name, so a file cannot point at arbitrary folders."""
    return bool(name) and not any(c in name for c in "/\\\0") and not name.startswith(".")


def resolve(name_or_path: Union[str, os.PathLike], allow_path: bool = True) -> Path:
    """The folder of a checkpoint given by zoo name or path; raises ModelNotFoundError."""
    if not allow_path and not is_plain_name(str(name_or_path)):
        raise ModelNotFoundError(f"{str(name_or_path)!r} is not a zoo model name")
    p = Path(name_or_path)
    if allow_path and _is_checkpoint(p):
        return p.resolve()
    if allow_path and p.is_dir() and (p / CONFIG_FILE).is_file() != (p / f"{WEIGHTS_PREFIX}.index").is_file():
        missing = CONFIG_FILE if not (p / CONFIG_FILE).is_file() else f"{WEIGHTS_PREFIX}.index"
        raise ModelNotFoundError(f"{p / missing} is missing: {p} is not a complete checkpoint")
    for d in search_dirs():
        if _is_checkpoint(d / str(name_or_path)):
            return (d / str(name_or_path)).resolve()
    known = ", ".join(m["name"] for m in list_models()) or "none"
    raise ModelNotFoundError(f"no checkpoint named {str(name_or_path)!r} (searched {', '.join(map(str, search_dirs()))}; "
                             f"known models: {known})")


def read_info(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    folder = resolve(path)
    try:
        with open(folder / CONFIG_FILE) as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read {folder / CONFIG_FILE}: {e}") from None
    if not isinstance(info, dict):
        raise ModelError(f"{folder / CONFIG_FILE}: expected a JSON object, found {type(info).__name__}")
    info.setdefault("name", folder.name)
    return info


def list_models() -> List[Dict[str, Any]]:
    """Every checkpoint found in the search folders, one dict each (name, path, config, evaluation...)."""
    found = {}
    for d in search_dirs():
        if not d.is_dir():
            continue
        for sub in sorted(d.iterdir()):
            if _is_checkpoint(sub) and sub.name not in found:
                try:
                    with open(sub / CONFIG_FILE) as f:
                        info = json.load(f)
                except (OSError, json.JSONDecodeError):
                    continue
                info["name"] = sub.name
                info["path"] = str(sub)
                found[sub.name] = info
    return list(found.values())


def _short(e) -> str:
    """The first line of an exception message, cut to a readable length."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def load_model(name_or_path: Union[str, os.PathLike], prepare_coders: bool = True, allow_path: bool = True):
    """Loads a trained model by zoo name or checkpoint folder; cached, so repeated loads are free.

    The returned model has ``zoo_name`` (the folder name, written into compressed files) and ``info``.

    Raises:
      ModelNotFoundError: no checkpoint of that name or path.
      ModelError: naming the file: unreadable or invalid ``config.json``, damaged weights, weights that do not
        fit the configured architecture, or (via the fingerprint recorded in ``config.json``) a config and
        weights that do not belong together.
    """
    import tensorflow as tf  # noqa: F401  (import late: listing models should not need TF)
    from tfc_inference.models import ModelConfig, build_model
    folder = resolve(name_or_path, allow_path=allow_path)
    key = str(folder)
    if key in _CACHE:
        return _CACHE[key]
    info = read_info(folder)
    config_file, weights = folder / CONFIG_FILE, f"{folder / WEIGHTS_PREFIX}.{{index,data-*}}"
    try:
        if not isinstance(info.get("config"), dict):
            raise KeyError("no 'config' section")
        config = ModelConfig.from_dict(info["config"])
        model = build_model(config)
    except (KeyError, ValueError, TypeError) as e:
        raise ModelError(f"{config_file}: invalid model configuration: {_short(e)}") from None
    try:
        model.load_weights(str(folder / WEIGHTS_PREFIX)).assert_existing_objects_matched()
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ModelError(f"{weights} do not match the architecture in {config_file}: {_short(e)}") from None
    except tf.errors.OpError as e:
        raise ModelError(f"cannot read the weights {weights}: {_short(e.message)}") from None
    except (IndexError, RuntimeError, OSError) as e:
        raise ModelError(f"cannot read the weights {weights} (damaged?): {_short(e)}") from None
    fingerprint = model.fingerprint()  # a hash over every weight: compute once
    recorded = info.get("fingerprint")
    if recorded is not None and recorded != fingerprint.hex():
        raise ModelError(f"{weights} and {config_file} do not belong together: the config records fingerprint "
                         f"{recorded}, the weights with this config give {fingerprint.hex()}")
    model.zoo_name = folder.name
    model.info = info
    tables = read_tables(folder, fingerprint)
    if prepare_coders:
        model.prepare_coders(tables)
    else:
        model._frozen_tables = tables
    _CACHE[key] = model
    return model


def read_tables(folder: Path, fingerprint: bytes) -> Optional[Dict[str, Any]]:
    """The frozen coding tables of a checkpoint folder (None if it has none, as older checkpoints)."""
    import zipfile
    import numpy as np
    path = Path(folder) / TABLES_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            tables = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"cannot read the coding tables {path} (damaged?): {_short(e)}") from None
    if tables.pop("fingerprint", np.zeros(0, np.uint8)).tobytes() != fingerprint:
        raise ModelError(f"{path} belongs to other weights than {Path(folder) / WEIGHTS_PREFIX}")
    return tables


def write_tables(model, folder: Union[str, os.PathLike]) -> Path:
    """Computes the model's coding tables from its weights and freezes them in ``folder``."""
    import numpy as np
    model.prepare_coders()
    tables = dict(model.coding_tables())
    if hasattr(model, "q_params"):
        from tfc_inference import bits_back
        model._bb_prior_table = None
        tables.update(bits_back.prior_table_arrays(bits_back.prior_table(model)))
    path = Path(folder) / TABLES_FILE
    np.savez_compressed(path, fingerprint=np.frombuffer(model.fingerprint(), np.uint8), **tables)
    model.prepare_coders(tables)
    return path


def save_checkpoint(model, folder: Union[str, os.PathLike], training: Optional[Dict[str, Any]] = None,
                    evaluation: Optional[Dict[str, Any]] = None) -> Path:
    """Writes weights only (no optimizer state) and ``config.json`` to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(folder / WEIGHTS_PREFIX))
    # The TF "checkpoint" bookkeeping file is not needed to load by prefix; keep the folder minimal.
    (folder / "checkpoint").unlink(missing_ok=True)
    info = {
        "name": folder.name,
        "class": type(model).__name__,
        "config": model.config.to_dict(),
        "fingerprint": model.fingerprint().hex(),
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training": training or {},
        "evaluation": evaluation or {},
    }
    with open(folder / CONFIG_FILE, "w") as f:
        json.dump(info, f, indent=2)
    if FREEZE_TABLES:
        write_tables(model, folder)
    _CACHE.pop(str(folder.resolve()), None)
    return folder


def set_evaluation(name_or_path: Union[str, os.PathLike], evaluation: Dict[str, Any]) -> None:
    """Replaces the ``evaluation`` entry of a checkpoint's config.json (weights untouched)."""
    folder = resolve(name_or_path)
    info = read_info(folder)
    info["evaluation"] = evaluation
    with open(folder / CONFIG_FILE, "w") as f:
        json.dump(info, f, indent=2)
