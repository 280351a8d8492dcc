"""Where transformers, PEFT and bitsandbytes expect things (docs/init.md).

- A model is a folder with config.json and model.safetensors, or model.safetensors.index.json
  naming its shards; a lone .safetensors file is read too (then no config.json is written).
- A 4-bit base (transformers' bitsandbytes layout) stores each quantized linear `M.weight` as the
  packed uint8 codes, shape (ceil(n/2), 1), beside `M.weight.absmax`, `M.weight.quant_map`, the
  JSON-encoded `M.weight.quant_state.bitsandbytes__nf4` (and `nested_absmax`, `nested_quant_map`
  when double-quantized), exactly `qref.QuantState.as_dict(packed=True)`; config.json carries
  `quantization_config` with `quant_method: bitsandbytes`.
- A PEFT LoRA adapter stores `base_model.model.M.lora_A.weight` (r, in) and `...lora_B.weight`
  (out, r) and adapter_config.json with `peft_type: LORA`, `r`, `lora_alpha`, `target_modules`;
  PEFT's forward adds (lora_alpha / r) B A x.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .safetensors_io import FLOAT_CODES, SafetensorsError, SafetensorsReader, TensorInfo

INDEX = "model.safetensors.index.json"
#: Files beside the weights that a loader reads and the output keeps (copied unchanged).
COMPANIONS = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
#: Module names that hold embeddings or the output head: transformers keeps them unquantized.
NOT_LINEAR = re.compile(r"(^|\.)(lm_head|embed_out|wte|wpe|[a-z_]*embed[a-z_]*|[a-z_]*embeddings?)$")
TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class Checkpoint:
    """The tensors of a model folder (single file or sharded) or of one safetensors file."""

    def __init__(self, path):
        self.path = Path(path)
        self.config: dict | None = None
        self.folder: Path | None = None
        if not self.path.exists():
            raise FileNotFoundError(f"MODEL {self.path}: no such file or folder")
        if self.path.is_dir():
            self.folder = self.path
            self.config = (
                _read_json(self.path / "config.json", "MODEL") if (self.path / "config.json").is_file() else None
            )
            files = self._weight_files()
        else:
            files = [self.path]
        self.readers = [SafetensorsReader(f) for f in files]
        self.where: dict[str, SafetensorsReader] = {}
        for r in self.readers:
            for name in r.keys():
                if name in self.where:
                    raise SafetensorsError(f"MODEL {self.path}: tensor {name!r} appears in two shards")
                self.where[name] = r
        if not self.where:
            raise SafetensorsError(f"MODEL {self.path}: the checkpoint holds no tensors")

    def _weight_files(self) -> list[Path]:
        assert self.folder is not None
        index = self.folder / INDEX
        if index.is_file():
            doc = _read_json(index, "MODEL")
            weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise SafetensorsError(f"MODEL {index}: weight_map must map tensor names to shard files")
            shards = []
            for f in weight_map.values():
                # Shard names come from JSON: only plain file names inside the folder are read.
                if not isinstance(f, str) or Path(f).name != f or f.startswith(".") or not f.endswith(".safetensors"):
                    raise SafetensorsError(f"MODEL {index}: shard {f!r} is not a .safetensors file in the folder")
                if f not in shards:
                    shards.append(f)
            return [self.folder / f for f in shards]
        if (self.folder / "model.safetensors").is_file():
            return [self.folder / "model.safetensors"]
        found = sorted(self.folder.glob("*.safetensors"))
        if len(found) == 1:
            return found
        pickled = [p.name for p in self.folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = f"; {', '.join(pickled)} are pickles and are not read (convert them to safetensors)" if pickled else ""
        raise SafetensorsError(f"MODEL {self.folder}: no model.safetensors or {INDEX}{hint}")

    def names(self) -> list[str]:
        return list(self.where)

    def info(self, name: str) -> TensorInfo:
        return self.where[name].tensors[name]

    def companions(self) -> list[Path]:
        return [self.folder / c for c in COMPANIONS if self.folder and (self.folder / c).is_file()]


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{what} {path}: not valid JSON ({e})") from e


def module_of(tensor: str) -> str:
    return tensor[: -len(".weight")] if tensor.endswith(".weight") else tensor


def is_linear(info: TensorInfo) -> bool:
    """A 2-D float `*.weight` that is not an embedding or the output head: what transformers'
    bitsandbytes integration turns into a 4-bit linear."""
    return (
        info.name.endswith(".weight")
        and len(info.shape) == 2
        and info.dtype in FLOAT_CODES
        and not NOT_LINEAR.search(module_of(info.name))
    )


def select_targets(linears: list[str], target_modules=None, target_regex: str | None = None) -> list[str]:
    """The linear modules to adapt, PEFT's rules: a name in `target_modules` matches a module equal
    to it or ending in '.name'; `target_regex` must match the whole module name. Default: every
    linear (the attention and MLP projections of a decoder)."""
    if target_modules is not None and target_regex is not None:
        raise ValueError("give --target-modules or --target-regex, not both")
    if target_regex is not None:
        try:
            pattern = re.compile(target_regex)
        except re.error as e:
            raise ValueError(f"--target-regex {target_regex!r} is not a regular expression ({e})") from e
        chosen = [m for m in linears if pattern.fullmatch(m)]
        if not chosen:
            raise ValueError(f"--target-regex {target_regex!r} matches none of the {len(linears)} linear modules")
        return chosen
    if target_modules is None:
        return list(linears)
    chosen = []
    for t in target_modules:
        hits = [m for m in linears if m == t or m.endswith(f".{t}")]
        if not hits:
            raise ValueError(f"--target-modules: {t!r} matches no linear module (e.g. {linears[:3]})")
        chosen += [m for m in hits if m not in chosen]
    return [m for m in linears if m in chosen]


def peft_target_modules(targets: list[str], linears: list[str]) -> list[str]:
    """The shortest list PEFT reads as exactly `targets`: the last name parts when they select
    nothing else, else the full module names."""
    suffixes = sorted({m.rsplit(".", 1)[-1] for m in targets})
    if set(select_targets(linears, suffixes)) == set(targets):
        return suffixes
    return list(targets)


def quantization_config(quant_type: str, double_quant: bool, compute_dtype: str, keep: list[str]) -> dict:
    """config.json's `quantization_config` for transformers' 4-bit bitsandbytes loader; `keep` lists
    linear modules left unquantized (transformers' own default skips remain: the output head)."""
    return {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "load_in_8bit": False,
        "bnb_4bit_quant_type": quant_type,
        "bnb_4bit_use_double_quant": bool(double_quant),
        "bnb_4bit_compute_dtype": compute_dtype,
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": (["lm_head", *(re.escape(m) for m in keep)]) if keep else None,
        "llm_int8_threshold": 6.0,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_enable_fp32_cpu_offload": False,
    }


def gptq_quantization_config(bits: int, group_size: int, checkpoint_format: str, version: str) -> dict:
    """config.json's `quantization_config` for a GPTQ checkpoint (transformers' GPTQConfig, read by
    GPTQModel): contiguous groups (desc_act false), asymmetric, `checkpoint_format` "gptq" (qzeros
    store z - 1) or "gptq_v2" (z). The weights are round-to-nearest, GPTQ with an identity Hessian:
    `meta` says so, and no calibration data was used."""
    return {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": False,
        "sym": False,
        "true_sequential": True,
        "damp_percent": 0.1,
        "checkpoint_format": checkpoint_format,
        "format": checkpoint_format,
        "pack_dtype": "int32",
        "meta": {"quantizer": [f"qref:{version}"], "method": "round-to-nearest (identity Hessian)"},
    }


def adapter_config(rank: int, alpha: float, target_modules: list[str], base: str) -> dict:
    """adapter_config.json for PEFT's LoRA (unlisted fields take PEFT's defaults)."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": target_modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "base_model_name_or_path": base,
        "inference_mode": False,
    }


def peft_key(module: str, factor: str) -> str:
    """PEFT's saved name of factor "A" or "B" of `module`."""
    return f"base_model.model.{module}.lora_{factor}.weight"
