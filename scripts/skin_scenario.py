"""Write scenarios/skin/params.yaml: the committed params.yaml with the skin-lesion task swapped in.

Only the task changes (classes, held-out client, clients, the federation, the SD prompt); every training
setting stays the fundus demo's, so the two scenarios compare like for like. Rerun after editing
params.yaml; `tests/test_scenarios.py` fails while the two files drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITES = {"derm_a": "clinic_a", "derm_b": "clinic_b", "derm_c": "clinic_c", "derm_d": "clinic_d"}

HEADER = """# dsfed pipeline parameters: the skin-lesion scenario (issue 13). Run it in a second checkout:
#   git worktree add ../dsfed-skin && cp scenarios/skin/params.yaml ../dsfed-skin/ && cd ../dsfed-skin && dsfed repro
# 4 phantom dermoscopy/clinical sites (skin tone, device, hair, field of view differ; data/phantom/sites.yaml),
# one lesion class; derm_d is held out (leave-one-domain-out). Everything else is the fundus demo's params.yaml.
"""

NO_SAMFED = """# samfed: the SAM-Fed task runs in the fundus demo's params (on skin phantoms already); none here.
samfed: {public: {}, clients: {}, architectures: {}, variants: {}}
"""


def skin_params(text: str) -> str:
    body = text.split("\n\nseed:", 1)[1]
    body = "seed:" + body
    body = body.replace("classes: [optic_disc, optic_cup]   # mask channels, in this order",
                        "classes: [lesion]                  # mask channels, in this order")
    body = re.sub(r"holdout: site_d( +)#", r"holdout: derm_d\1#", body)
    body = body.replace("clients: [site_a, site_b, site_c, site_d]", "clients: [derm_a, derm_b, derm_c, derm_d]")
    body = re.sub(r"prompt: a retinal fundus photograph( *)#", r"prompt: a dermoscopy photograph of a skin lesion  #", body)
    # SAM-Fed already runs on skin phantoms in the demo: none here (the mappings DVC iterates over, empty)
    body = re.sub(r"\n# samfed: .*?(?=\n# Hospitals:)", "\n" + NO_SAMFED, body, flags=re.S)
    head, _, _ = body.partition("\nclients:\n")
    clients = "".join(f"  {name}:\n    source: {{kind: phantom, task: skin, view: full, path: data/phantom/sites.yaml, site: {site}, n: 80, seed: 0}}\n"
                      for name, site in SITES.items())
    return HEADER + "\n" + head + "\nclients:\n" + clients


if __name__ == "__main__":
    out = ROOT / "scenarios/skin/params.yaml"
    out.write_text(skin_params((ROOT / "params.yaml").read_text()))
    print(out, file=sys.stderr)
