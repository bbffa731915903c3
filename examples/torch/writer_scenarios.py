#!/usr/bin/python3
"""Write scenarios/torch (or the scenarios named) for another writer of train.py.

    examples/torch/writer_scenarios.py torch-save OUTDIR [SCENARIO.yaml...]
    build/bin/ckpt-harness suite OUTDIR -j 2

The scenarios in scenarios/torch are written for `--writer atomic` and run as
they are. For another writer this changes, in a copy: the writer argument, the
path of train.py (absolute: the copy lives elsewhere), the checkpoint names
(`generations`, and the target of damage at rest: the writer's one file per
checkpoint) and the name (suffixed with the writer). A scenario marked
`# writers: atomic` names a phase the writer does not have (its fault would
never fire) and is left out, with a line on stderr saying so.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "..", "..", "scenarios", "torch")
# writer -> (generations glob, damage target FILE glob inside newest/oldest/...)
# (dcp: __0_2.distcp is the first Linear layer's weight, a torch.save'd tensor of 12288 data bytes)
LAYOUT = {"atomic": ('"step-????????"', "rank-00000.pt"), "torch-save": ('"ckpt-????????.pt"', "ckpt-*.pt"),
          "dcp": ('"dcp-????????"', "__0_2.distcp")}


def convert(text, writer):
    gens, target = LAYOUT[writer]
    out = text.replace("--writer, atomic", "--writer, " + writer)
    out = out.replace('"{scenario_dir}/../../examples/torch/train.py"', '"%s"' % os.path.join(HERE, "train.py"))
    out = out.replace('generations: "step-????????"', "generations: " + gens)
    out = re.sub(r"((?:bitflip|truncate|delete): \w+/)rank-00000\.pt", lambda m: m.group(1) + target, out)
    out = re.sub(r"^name: (.*)$", r"name: \1-" + writer, out, count=1, flags=re.M)
    return out


def main(argv):
    if len(argv) < 2 or argv[0] not in LAYOUT:
        print("usage: writer_scenarios.py {%s} OUTDIR [SCENARIO.yaml...]" % ",".join(LAYOUT), file=sys.stderr)
        return 2
    writer, outdir, files = argv[0], argv[1], argv[2:]
    if not files:
        files = sorted(os.path.join(SCENARIOS, n) for n in os.listdir(SCENARIOS) if n.endswith(".yaml"))
    os.makedirs(outdir, exist_ok=True)
    for f in files:
        text = open(f).read()
        m = re.search(r"^# writers: (.*)$", text, re.M)
        if m and writer not in m.group(1).split(" (")[0].split(", "):
            print("%s: left out for %s; writers: %s" % (os.path.basename(f), writer, m.group(1)), file=sys.stderr)
            continue
        with open(os.path.join(outdir, os.path.basename(f)[:-5] + "-" + writer + ".yaml"), "w") as o:
            o.write(convert(text, writer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
