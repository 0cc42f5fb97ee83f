"""`make bench-peers`: the peers `make bench` is compared with, measured in the same run.

Reads the `bench.json` that `make bench` has just written (its shapes and thread count),
times PyTorch (float32 and, where the CPU supports it, bfloat16 autocast) training and
generating at exactly those shapes, and symusic parsing the same MIDI folder, then adds a
`peers` section and the ratios (ours / theirs, medians) to `bench.json` and prints them.

Each figure is min / median / max of at least 10 timed samples after a warm-up, as in
`make bench`. Training is also timed in pairs: this project's steps, served one at a time
by `bench --steps-on-request`, and PyTorch's taken in turn with them, round after round, so
both sides meet the same moments of a machine whose speed drifts between minutes (a shared
VM's does by ±30 %); the paired ratio is the median over the rounds of ours / theirs. The network is the one this project trains: an embedding, a stacked LSTM
and a linear layer, cross-entropy at every position, Adam; generation carries the LSTM
state and takes the most likely token, one step at a time, under `no_grad`.

Run by the Makefile in a throwaway virtual environment under `target/` (never imported by
the project, which is pure Rust); see `peers-requirements.txt` for the pinned versions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = 10
# Rounds of the paired training timing: twice the samples, as a ratio of two noisy rates
# is noisier than either.
PAIRED_ROUNDS = 20
# Seconds of rest before each paired step, so the other side's idle threads (OpenMP's spin
# for up to 200 ms) have gone to sleep.
PAUSE = 0.25


def spread(units, seconds):
    """min / median / max of the rate `units / seconds` over the samples."""
    rates = sorted(units / s for s in seconds)
    return {"samples": len(seconds), "min": rates[0], "median": statistics.median(rates), "max": rates[-1]}


def timed(work, samples=SAMPLES, warmup=1):
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return seconds


def torch_network(shapes, hidden):
    """The network this project trains, in PyTorch, at the bench's shapes."""
    from torch import nn

    class Network(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(shapes["vocab_size"], shapes["embedding"])
            self.lstm = nn.LSTM(shapes["embedding"], hidden, num_layers=shapes["layers"], batch_first=True)
            self.head = nn.Linear(hidden, shapes["vocab_size"])

        def forward(self, tokens, state=None):
            out, state = self.lstm(self.embedding(tokens), state)
            return self.head(out), state

    return Network()


def torch_training_step(shapes, hidden, dtype):
    """One training step of a fresh PyTorch network on a batch of random tokens, as a function."""
    import torch
    from torch import nn

    batch, seq_len, vocab = shapes["batch"], shapes["seq_len"], shapes["vocab_size"]
    model = torch_network(shapes, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(0, vocab, (batch, seq_len + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits, _ = model(inputs)
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def torch_settings():
    """PyTorch's precisions on this processor: float32, and bfloat16 autocast where oneDNN has it."""
    import torch

    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return [("float32", None)] + ([("bfloat16 autocast", torch.bfloat16)] if bf16 else [])


def torch_figures(shapes, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    batch, seq_len = shapes["batch"], shapes["seq_len"]
    settings = torch_settings()
    figures = {"version": torch.__version__, "threads": threads, "training": [], "generation": []}
    for hidden in (256, 512):
        for name, dtype in settings:
            rate = spread(batch * seq_len, timed(torch_training_step(shapes, hidden, dtype)))
            figures["training"].append({"hidden": hidden, "precision": name, "targets_per_second": rate})
            print(f"  PyTorch training  H={hidden} {name:<17} {rate['median']:>10.0f} targets/s", flush=True)

    tokens = shapes["generated_tokens"]
    model = torch_network(shapes, 512).eval()
    for streams in (1, 16):
        for onednn in (False, True):
            for name, dtype in settings:
                torch.backends.mkldnn.enabled = onednn

                def generate():
                    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                        token, state = torch.arange(streams).reshape(streams, 1), None
                        for _ in range(tokens):
                            logits, state = model(token, state)
                            token = logits[:, -1].argmax(-1, keepdim=True)

                rate = spread(tokens * streams, timed(generate))
                setting = f"{name}, oneDNN {'on' if onednn else 'off'}"
                figures["generation"].append({"hidden": 512, "streams": streams, "setting": setting,
                                              "tokens_per_second": rate})
                print(f"  PyTorch generation {streams:>2} stream(s) {setting:<28} {rate['median']:>8.0f} tokens/s",
                      flush=True)
    torch.backends.mkldnn.enabled = True
    return figures


def paired_training(shapes, threads, bench_binary, trainers):
    """This project's training steps (`trainers`: bench.json's "fused", "fused bf16") and
    PyTorch's in every precision it has, taken in turn, round after round, at H = 256 and 512.
    Returns per hidden size each side's rates and, per pairing, the median over the rounds
    of ours / theirs."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    ours_precisions = {"fused": "f32", "fused bf16": "bf16"}
    ours = [(trainer, ours_precisions[trainer]) for trainer in trainers if trainer in ours_precisions]
    targets = shapes["batch"] * shapes["seq_len"]
    server = subprocess.Popen([bench_binary, "--steps-on-request", "--threads", str(threads)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        for hidden in (256, 512):
            def our_step(precision):
                server.stdin.write(f"{hidden} {precision}\n")
                server.stdin.flush()
                answer = server.stdout.readline().strip()
                if not answer or answer.startswith("error"):
                    raise RuntimeError(f"bench --steps-on-request: {answer or 'no answer'}")
                return float(answer)

            theirs = [(name, torch_training_step(shapes, hidden, dtype)) for name, dtype in torch_settings()]
            for _, precision in ours:
                our_step(precision)  # builds the model; the server warms it up itself
            for _, step in theirs:
                step()
            seconds = {trainer: [] for trainer, _ in ours} | {name: [] for name, _ in theirs}
            for _ in range(PAIRED_ROUNDS):
                for trainer, precision in ours:
                    time.sleep(PAUSE)
                    seconds[trainer].append(our_step(precision))
                for name, step in theirs:
                    time.sleep(PAUSE)
                    seconds[name] += timed(step, samples=1, warmup=0)
            ratios = {f"{trainer} vs PyTorch {name}":
                      statistics.median(t / o for o, t in zip(seconds[trainer], seconds[name]))
                      for trainer, _ in ours for name, _ in theirs}
            rates = {side: spread(targets, s) for side, s in seconds.items()}
            rows.append({"hidden": hidden, "rounds": PAIRED_ROUNDS, "targets_per_second": rates, "ratios": ratios})
            for trainer, _ in ours:
                for name, _ in theirs:
                    pairing = f"{trainer} vs PyTorch {name}"
                    print(f"  paired training H={hidden} {pairing:<34} {ratios[pairing]:5.2f}× (median of "
                          f"{PAIRED_ROUNDS} rounds' ratios; medians {rates[trainer]['median']:.0f} and "
                          f"{rates[name]['median']:.0f} targets/s)", flush=True)
    finally:
        server.stdin.close()
        server.wait()
    return rows


def symusic_figures(corpus):
    import symusic

    suffixes = {".mid", ".midi", ".rmi"}
    paths = sorted(p for p in Path(corpus).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    blobs = [p.read_bytes() for p in paths]

    def notes_of(score):
        return sum(len(track.notes) for track in score.tracks)

    notes, failed = 0, 0
    for blob in blobs:
        try:
            notes += notes_of(symusic.Score.from_midi(blob))
        except Exception:
            failed += 1

    def parse_in_memory():
        for blob in blobs:
            try:
                symusic.Score.from_midi(blob)
            except Exception:
                pass

    def parse_files():
        for path in paths:
            try:
                symusic.Score(str(path))
            except Exception:
                pass

    figures = {
        "version": symusic.__version__,
        "threads": 1,
        "files": len(paths),
        "unreadable": failed,
        "notes": notes,
        "parse_in_memory": spread(notes, timed(parse_in_memory)),
        "parse_files": spread(notes, timed(parse_files)),
    }
    print(f"  symusic parse, in memory  {figures['parse_in_memory']['median']:>12.0f} notes/s "
          f"({len(paths)} files, {notes} notes, 1 thread)", flush=True)
    return figures


def ratios(bench, peers):
    """Ours / theirs, medians: above 1 means this project is faster."""
    out = {}
    torch = peers.get("pytorch")
    if torch:
        def theirs_training(hidden, precision):
            rows = [t for t in torch["training"] if t["hidden"] == hidden and t["precision"] == precision]
            return rows[0]["targets_per_second"]["median"] if rows else None

        for row in bench.get("training", []):
            if not row["trainer"].startswith("fused"):
                continue
            ours = row["step"]["per_second"]["median"]
            for precision in ("float32", "bfloat16 autocast"):
                theirs = theirs_training(row["hidden"], precision)
                if theirs:
                    out[f"training H={row['hidden']} {row['trainer']} vs PyTorch {precision}"] = ours / theirs
        for row in torch.get("paired_training", []):
            for pairing, ratio in row["ratios"].items():
                out[f"training H={row['hidden']} {pairing}, paired"] = ratio
        for row in bench.get("generation", []):
            for precision in ("float32", ""):
                best = max((g["tokens_per_second"]["median"] for g in torch["generation"]
                            if g["streams"] == row["streams"] and g["setting"].startswith(precision)), default=None)
                if best:
                    theirs = f"PyTorch {precision}'s best" if precision else "PyTorch's best (any setting)"
                    key = f"generation {row['streams']} stream(s) {row.get('precision', 'f32')} vs {theirs}"
                    out[key] = row["run"]["per_second"]["median"] / best
    music = peers.get("symusic")
    extract = bench.get("extract")
    if music and extract:
        theirs = music["parse_in_memory"]["median"]
        out["extract parse in memory vs symusic"] = extract["parse_in_memory"]["per_second"]["median"] / theirs
        for key in ("stage_warm", "stage_cold"):
            if extract.get(key):
                out[f"extract {key.replace('_', ', ')} cache vs symusic parse"] = \
                    extract[key]["per_second"]["median"] / theirs
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="artifacts/bench.json", help="the bench.json `make bench` wrote")
    parser.add_argument("--corpus", default="../shared/data/piano", help="the MIDI folder bench timed extract on")
    parser.add_argument("--bench-binary", default="target/release/bench",
                        help="the bench binary, which serves this project's training steps for the paired timing")
    args = parser.parse_args()
    bench_path = Path(args.bench)
    bench = json.loads(bench_path.read_text())
    peers = {}
    print(f"bench-peers ({bench['threads']} threads; processor: {bench.get('cpu', 'not recorded')})", flush=True)
    peers["pytorch"] = torch_figures(bench["shapes"], bench["threads"])
    trainers = sorted({row["trainer"] for row in bench.get("training", [])})
    if trainers:
        peers["pytorch"]["paired_training"] = paired_training(bench["shapes"], bench["threads"], args.bench_binary,
                                                              trainers)
    if Path(args.corpus).is_dir():
        peers["symusic"] = symusic_figures(args.corpus)
    bench["peers"] = peers
    bench["ratios"] = ratios(bench, peers)
    print("ratios, ours / theirs (medians; above 1: this project is faster)")
    for key, value in bench["ratios"].items():
        print(f"  {key:<62} {value:5.2f}×")
    temporary = bench_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(bench, indent=2) + "\n")
    os.replace(temporary, bench_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
