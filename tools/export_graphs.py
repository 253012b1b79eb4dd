"""Write the ONNX graphs of the light coding path beside existing weights, and list them in the manifests.

Training writes them with the weights (`torch_weights.save_weights`); this is for weights made before, or
after a change to `aecodec/export.py`. The safetensors files, and so the model ids, do not change.

    python tools/export_graphs.py [--folder weights] [--name aecodec-mshp-v2-candidate]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aecodec.errors import MissingExtraError  # noqa: E402

try:
    from aecodec.export import export_graphs, export_head_graphs, write_graphs
except MissingExtraError as e:  # the one line naming the extra, not a traceback
    sys.exit(str(e))
from aecodec.torch_weights import load_head, load_model  # noqa: E402
from aecodec.weights import DEFAULT_NAME, HEAD_NAMES, WeightsError, find_weights, update_manifest  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--folder", type=Path, default=None, help="the weights' folder (default: the installed weights)")
p.add_argument("--name", default=DEFAULT_NAME, help="the backbone's weights; the heads follow only the default name's")
args = p.parse_args()

backbone = find_weights(args.name, args.folder)
model = load_model(backbone).eval()
graphs = write_graphs(export_graphs(model, backbone.path), backbone.path)
update_manifest(backbone, {"graphs": graphs})
print(f"{backbone.path.name}: {', '.join(graphs)}")
for kind, name in HEAD_NAMES.items() if args.name == DEFAULT_NAME else ():
    try:
        head_weights = find_weights(name, args.folder)
    except WeightsError as e:  # a folder without heads (a candidate backbone) is fine
        print(f"{name}: skipped ({e})")
        continue
    head = load_head(kind, args.folder)
    graphs = write_graphs(export_head_graphs(head, model, head_weights.path, backbone.path), head_weights.path)
    update_manifest(head_weights, {"graphs": graphs})
    print(f"{head_weights.path.name}: {', '.join(graphs)}")
