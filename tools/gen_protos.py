"""Generate Python gRPC code and Envoy's descriptor set from protos/ (never committed).

Output: gen/paygate/... (messages, stubs, .pyi) and gen/descriptors.pb, which Envoy's
grpc_json_transcoder loads. The set includes imports, and google/rpc/{status,error_details}
explicitly: without them Envoy cannot render error details into JSON bodies.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
VENDOR = PROTOS / "vendor"
OUT = ROOT / "gen"
WELL_KNOWN = Path(protoc.__file__).parent / "_proto"
# mypy-protobuf's plugin gives the gRPC stubs and servicer bases real types (.pyi). Servicer
# methods stay concrete, as at run time: a method no issue has built yet answers UNIMPLEMENTED.
GRPC_STUBS_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
ERROR_PROTOS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    ours = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "paygate").rglob("*.proto"))
    vendored = sorted(str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*.proto"))
    includes = [f"-I{PROTOS}", f"-I{VENDOR}", f"-I{WELL_KNOWN}"]
    python = [
        "protoc",
        *includes,
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--plugin=protoc-gen-mypy_grpc={GRPC_STUBS_PLUGIN}",
        f"--mypy_grpc_out=generate_concrete_servicer_stubs:{OUT}",
        *ours,
    ]
    if protoc.main(python) != 0:
        return 1
    descriptors = [
        "protoc",
        *includes,
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={OUT / 'descriptors.pb'}",
        *ours,
        *ERROR_PROTOS,
    ]
    if protoc.main(descriptors) != 0:
        return 1
    print(f"generated {len(ours)} protos (+{len(vendored)} vendored) into {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
