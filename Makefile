# The pipeline as file targets: extract → encode → train → compose.
#
#   make                    the whole pipeline on DATA (default: extract.input in pipeline.toml)
#   make DATA=~/my-midi     the same on your own folder of MIDI files
#   make test               the test suite (what CI runs)
#   make help               every target and variable
#
# A stage reruns only when something it reads has changed: its binary, its own section of
# pipeline.toml, or the artifact before it; `make -n` lists what `make` would run.

CONFIG   ?= pipeline.toml
ART      ?= artifacts
# Extra cargo flags, e.g. CARGO_FLAGS="--features train/cuda,compose/cuda".
CARGO_FLAGS ?=
# Where cargo builds: target/, or CARGO_TARGET_DIR where that is set, as cargo reads it.
BIN      := $(or $(CARGO_TARGET_DIR),target)/release
# Variables set on the command line or in the environment are taken as text: make does not
# evaluate what they hold, and recipes hand them to the shell single-quoted ($(call q,NAME)),
# so `$(…)`, backticks and quotes in a folder's name are characters, never commands.
# CARGO_FLAGS and BASE_FLAGS are lists of flags, split into words by the shell on purpose.
USER_TEXT := CONFIG ART DATA BASE_MODEL BASE_CORPUS BASE_LIST BASE_MINUTES QUALITY_MODEL \
             QUALITY_CORPUS QUALITY_TRAIN QUALITY_VALID QUALITY_PIECES BENCH_CORPUS PEERS_ENV \
             CARGO_TARGET_DIR
define take_literally
ifneq ($$(filter command line environment%,$$(origin $(1))),)
override $(1) := $$(value $(1))
endif
endef
$(foreach name,$(USER_TEXT),$(eval $(call take_literally,$(name))))
# $(call q,NAME): variable NAME's value as one single-quoted shell word.
q = '$(subst ','\'',$($(1)))'
# ART, PEERS_ENV and CARGO_TARGET_DIR name make targets, which cannot hold every character:
# plain paths only.
plain_path = $(if $(shell printf '%s' $(call q,$(1)) | tr -d 'A-Za-z0-9._/+~-'),\
    $(error $(1) must be a plain path (letters, digits and ._/+~-): make names targets with it))
$(call plain_path,ART)$(call plain_path,PEERS_ENV)$(call plain_path,CARGO_TARGET_DIR)
# The input folder: DATA=… on the command line, else extract.input from the config, as the
# extract binary itself reads it (the config is parsed in one place: the stage binaries).
# Before the first build there is no binary to ask; extract then reads its config's folder.
ifeq ($(origin DATA),undefined)
DATA     := $(shell $(BIN)/extract --config $(call q,CONFIG) --print-input 2>/dev/null)
endif
STAMPS   := $(ART)/.make
NOTES    := $(ART)/notes.bin
DATASET  := $(ART)/dataset.bin
MODEL    := $(ART)/model.bin
MUSIC    := $(ART)/generated_music.mid
PAGE     := $(ART)/index.html

.DEFAULT_GOAL := all
.PHONY: ALWAYS
.PHONY: all test test-deps cuda-check gpu-check evaluate listen corpus inspect bench bench-peers bench-maestro clean help base-model quality page

# ---------------------------------------------------------------------------------------
# Stamps. Written while the Makefile is read, and rewritten only when their content
# changes, so their mtimes say "this changed" and nothing else:
#   inputs.stamp       the MIDI files under DATA with their contents' digests, as the
#                      extract binary lists them (`--print-inputs`; names with spaces
#                      are fine here, unlike in make prerequisites)
#   <stage>.stamp      the digest of the settings the stage's output depends on, as the
#                      stage binary computes it (`--print-config-digest`: its section,
#                      with seed and [runtime] where they matter), so no setting is parsed
#                      here; before the first build there is none, and the stage runs
# ---------------------------------------------------------------------------------------
$(shell mkdir -p $(STAMPS))

# $(call stage_digest,STAGE,ARGS): the command that prints the stage's settings digest.
stage_digest = $(BIN)/$(1) --config $(call q,CONFIG) $(2) --print-config-digest
# $(call record_stamp,NAME,STAGE,COMMAND): where the STAGE binary exists, COMMAND's output
# becomes $(STAMPS)/NAME.stamp if it differs. Where the command fails (the binary cannot
# read the config, the folder is missing), the stamp is left alone and this expands to
# ALWAYS, a prerequisite that makes the stage run (and say what is wrong); once that is
# fixed, only what really changed reruns.
record_stamp = $(if $(wildcard $(BIN)/$(2)),$(shell \
    if $(3) > $(STAMPS)/$(1).new 2>/dev/null; then \
        cmp -s $(STAMPS)/$(1).new $(STAMPS)/$(1).stamp || mv $(STAMPS)/$(1).new $(STAMPS)/$(1).stamp; \
    else echo ALWAYS; fi; rm -f $(STAMPS)/$(1).new))
# A stamp no binary could write yet: missing, so the stage runs (and its recipe writes it).
$(STAMPS)/%.stamp: ;
EXTRACT_INPUT = $(if $(DATA),--input $(call q,DATA))
# The MIDI files with their contents' digests, listed by extract itself (its own rule for
# what a MIDI file is); its recipe writes the list again for what it read.
list_inputs = $(BIN)/extract --config $(call q,CONFIG) $(EXTRACT_INPUT) --print-inputs

UNREADABLE_FOR_EXTRACT  := $(call record_stamp,inputs,extract,$(list_inputs)) \
                           $(call record_stamp,extract,extract,$(call stage_digest,extract,$(EXTRACT_INPUT)))
UNREADABLE_FOR_ENCODE   := $(call record_stamp,encode,encode,$(call stage_digest,encode))
UNREADABLE_FOR_TRAIN    := $(call record_stamp,train,train,$(call stage_digest,train))
UNREADABLE_FOR_COMPOSE  := $(call record_stamp,compose,compose,$(call stage_digest,compose))
UNREADABLE_FOR_EVALUATE := $(call record_stamp,evaluate,evaluate,$(call stage_digest,evaluate))

# ---------------------------------------------------------------------------------------
# Binaries. Cargo writes for each binary the list of source files it was built from
# (target/release/<bin>.d, absolute paths); read here with the paths made relative, so a
# binary is rebuilt exactly when one of its sources changed, with nothing listed by hand.
# Every source also gets an empty rule, so a file deleted or moved since the last build
# is no error. Before the first build there are no lists, and every binary is built.
# A crate's Cargo.toml (a new dependency) is not in the lists: any of them counts.
# ---------------------------------------------------------------------------------------
BINARIES := extract encode train compose report evaluate listen inspect
$(shell cat $(wildcard $(addprefix $(BIN)/,$(addsuffix .d,$(BINARIES)))) /dev/null | \
    sed 's|$(CURDIR)/||g' | \
    awk '{ print } { for (i = 2; i <= NF; i++) if ($$i != "\\") print $$i ":" }' > $(STAMPS)/binaries.d)
-include $(STAMPS)/binaries.d
$(addprefix $(BIN)/,$(BINARIES)): Cargo.toml Cargo.lock $(wildcard crates/*/Cargo.toml)
	cargo build --release --locked $(CARGO_FLAGS) --bin $(notdir $@)
	@touch $@

# ---------------------------------------------------------------------------------------
# The stages. Each artifact is the target of the stage that writes it, and is touched when
# the stage has run (a stage leaves a byte-identical artifact untouched; make needs it
# newer than what it was made from). So `make -n` lists exactly the stages `make` runs,
# and after a complete run `make -q` says everything is fresh. The one cost: a stage that
# reran and wrote the same bytes still reruns the stages after it (make judges by time, not
# content). Its inputs are judged by content: a MIDI file touched but not changed, or a
# comment in the config, runs nothing.
# ---------------------------------------------------------------------------------------
$(NOTES): $(BIN)/extract $(STAMPS)/inputs.stamp $(STAMPS)/extract.stamp $(UNREADABLE_FOR_EXTRACT)
	$(BIN)/extract --config $(call q,CONFIG) $(EXTRACT_INPUT) --output $(NOTES)
	@$(list_inputs) > $(STAMPS)/inputs.stamp
	@$(call stage_digest,extract,$(EXTRACT_INPUT)) > $(STAMPS)/extract.stamp
	@touch $@

$(DATASET): $(BIN)/encode $(NOTES) $(STAMPS)/encode.stamp $(UNREADABLE_FOR_ENCODE)
	$(BIN)/encode --config $(call q,CONFIG) --input $(NOTES) --output $(DATASET)
	@$(call stage_digest,encode) > $(STAMPS)/encode.stamp
	@touch $@

# The shipped base models, one of which train.init may name: a new one reruns train.
$(MODEL): $(BIN)/train $(DATASET) $(STAMPS)/train.stamp $(UNREADABLE_FOR_TRAIN) $(wildcard models/*.bin)
	$(BIN)/train --config $(call q,CONFIG) --input $(DATASET) --output $(MODEL)
	@$(call stage_digest,train) > $(STAMPS)/train.stamp
	@touch $@

$(MUSIC): $(BIN)/compose $(MODEL) $(DATASET) $(STAMPS)/compose.stamp $(UNREADABLE_FOR_COMPOSE)
	$(BIN)/compose --config $(call q,CONFIG) --input $(MODEL) --dataset $(DATASET) --output $(MUSIC)
	@$(call stage_digest,compose) > $(STAMPS)/compose.stamp
	@touch $@
	@echo "generated music: $(MUSIC)"

# The run's page (artifacts/index.html): redrawn when anything it shows changed. It has no
# downstream, so it is touched even when its bytes came out the same. The on-demand
# targets (evaluate, listen, quality) redraw it themselves when they are done.
$(PAGE): $(BIN)/report $(MUSIC) $(MODEL) $(DATASET) $(NOTES) $(wildcard $(ART)/generated_music*.wav)
	$(draw_page)
page: $(PAGE)
draw_page = $(BIN)/report --artifacts $(ART) && touch $(PAGE) && echo "the run's page: $(PAGE)"

all: $(MUSIC) $(PAGE)

# Stage 5, on demand: how good are the model and the music (evaluation.json and .md).
EVALUATION := $(ART)/evaluation.json
evaluate: $(EVALUATION)

$(EVALUATION): $(BIN)/evaluate $(BIN)/report $(MUSIC) $(MODEL) $(DATASET) $(NOTES) $(STAMPS)/evaluate.stamp $(UNREADABLE_FOR_EVALUATE)
	$(BIN)/evaluate --config $(call q,CONFIG) --dataset $(DATASET) --model $(MODEL) --notes $(NOTES) --output $(EVALUATION) $(MUSIC)
	@echo "evaluation: $(ART)/evaluation.md"
	@$(call stage_digest,evaluate) > $(STAMPS)/evaluate.stamp
	@$(draw_page)
	@touch $@

# ---------------------------------------------------------------------------------------
# Everything else.
# ---------------------------------------------------------------------------------------
test: test-deps
	cargo test --release --locked --workspace $(CARGO_FLAGS)

# The CUDA build, compiled, linked and tested without a GPU (with runtime.device = "auto",
# which must fall back to the CPU), as CI does; with a GPU, the same on it. Installs NVIDIA's
# toolkit wheels under target/cuda unless CUDA_HOME names a toolkit. See README, Devices.
cuda-check: test-deps
	crates/bench/cuda-check.sh
# On a machine with an NVIDIA GPU: the same, then the GPU's loss against the CPU's and its
# speed at H = 512 and 1024 (target/cuda/gpu-check.md). Prepared for a lent GPU; not yet run on one.
gpu-check: test-deps
	crates/bench/gpu-check.sh

# The listening test needs a General MIDI SoundFont. Installed here when none is found and
# the machine has apt and the rights to use it. Where that is impossible or fails, the test
# says it skipped, unless PIANOLA_REQUIRE_SOUNDFONT is set (CI), which makes it an error.
# The test of the written score needs MuseScore 3 and xvfb, test tools only, likewise.
# The test of the run's page needs Chromium, a test tool only (not installed here: it is
# large); without it that test skips, unless PIANOLA_REQUIRE_BROWSER is set (CI).
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2
test-deps:
	@if [ -f $(SOUNDFONT) ] || [ -n "$$PIANOLA_SOUNDFONT" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    apt-get update -q >/dev/null && apt-get install -y -q fluid-soundfont-gm >/dev/null; then :; \
	elif [ -n "$$PIANOLA_REQUIRE_SOUNDFONT" ]; then \
	    echo "error: no SoundFont at $(SOUNDFONT) and it could not be installed (fluid-soundfont-gm)"; exit 1; \
	else echo "note: no SoundFont: the listening test will skip (install fluid-soundfont-gm or set PIANOLA_SOUNDFONT)"; fi
	@if command -v chromium >/dev/null || [ -n "$$PIANOLA_BROWSER" ]; then :; \
	elif [ -n "$$PIANOLA_REQUIRE_BROWSER" ]; then echo "error: no chromium (apt-get install chromium)"; exit 1; \
	else echo "note: no Chromium: the test of the run's page will skip (apt-get install chromium, or set PIANOLA_BROWSER)"; fi
	@if command -v mscore3 >/dev/null && command -v xvfb-run >/dev/null || [ -n "$$PIANOLA_MUSESCORE" ]; then :; \
	elif [ -n "$$PIANOLA_REQUIRE_MUSESCORE" ]; then echo "error: no MuseScore 3 and xvfb-run (apt-get install musescore3 xvfb)"; exit 1; \
	else echo "note: no MuseScore 3: the test of the written score will skip (apt-get install musescore3 xvfb, or set PIANOLA_MUSESCORE)"; fi

# Renders the generated music to WAV (artifacts/generated_music.wav) to listen to.
listen: $(MUSIC) $(BIN)/listen $(BIN)/report
	$(BIN)/listen --config $(call q,CONFIG) $(MUSIC)
	@$(draw_page)

# What each artifact is and what made it.
inspect: $(BIN)/inspect
	@$(BIN)/inspect $(wildcard $(NOTES) $(DATASET) $(MODEL) $(MODEL).checkpoint)

# How fast each stage runs on this machine: prints a table and writes $(ART)/bench.json.
# A few minutes; BENCH_CORPUS is the MIDI folder that extract and encode are timed on.
BENCH_CORPUS ?= ../shared/data/piano
bench:
	cargo build --release --locked $(CARGO_FLAGS) --bin bench --bin extract --bin encode
	$(BIN)/bench --corpus $(call q,BENCH_CORPUS) --output $(ART)/bench.json

# The same, then PyTorch (float32 and bfloat16 autocast) and symusic at the bench's shapes
# and on its corpus, in the same run: bench.json gains `peers` and `ratios`. The first run
# installs them (crates/bench/peers-requirements.txt) into $(PEERS_ENV), outside the source.
PEERS_ENV ?= target/bench-peers
bench-peers: $(PEERS_ENV)/installed bench
	$(PEERS_ENV)/bin/python crates/bench/peers.py --bench $(ART)/bench.json --corpus $(call q,BENCH_CORPUS) \
	    --bench-binary $(BIN)/bench
$(PEERS_ENV)/installed: crates/bench/peers-requirements.txt
	python3 -m venv $(PEERS_ENV)
	$(PEERS_ENV)/bin/pip install --quiet -r $<
	touch $@

# The base model that `make` fine-tunes from: the pipeline on a real corpus, the files named
# in BASE_LIST (paths relative to BASE_CORPUS), trained for train.max_minutes of
# models/$(BASE_MODEL).toml (BASE_MINUTES overrides it) into models/$(BASE_MODEL).bin.
# Written without Adam's moments. BASE_MODEL=piano-beats trains the `beats` model.
BASE_MODEL   ?= piano
BASE_CORPUS  ?= ../shared/data/piano/piano-midi-de
BASE_LIST    ?= ../shared/splits/piano-midi-de.train.txt
BASE_MINUTES ?=
BASE_FLAGS   ?=
BASE         := $(ART)/base/$(BASE_MODEL)
$(call plain_path,BASE_MODEL)
base-model: $(BIN)/extract $(BIN)/encode $(BIN)/train
	@test -d $(call q,BASE_CORPUS) && test -f $(call q,BASE_LIST) || \
	    { echo "base-model: needs BASE_CORPUS (a folder) and BASE_LIST (a file of paths in it)"; exit 1; }
	rm -rf $(BASE)/corpus && mkdir -p $(BASE)/corpus
	while IFS= read -r f; do [ -n "$$f" ] || continue; mkdir -p "$(BASE)/corpus/$$(dirname "$$f")"; \
	    cp $(call q,BASE_CORPUS)/"$$f" "$(BASE)/corpus/$$f" || exit 1; done < $(call q,BASE_LIST)
	$(BIN)/extract --config models/$(BASE_MODEL).toml --input $(BASE)/corpus --output $(BASE)/notes.bin
	$(BIN)/encode --config models/$(BASE_MODEL).toml --input $(BASE)/notes.bin --output $(BASE)/dataset.bin
	$(BIN)/train --config models/$(BASE_MODEL).toml --input $(BASE)/dataset.bin --output $(BASE)/model.bin \
	    --weights-only $(if $(BASE_MINUTES),--max-minutes $(call q,BASE_MINUTES)) $(BASE_FLAGS)
	cp $(BASE)/model.bin models/$(BASE_MODEL).bin
	cp $(BASE)/model.report.json models/$(BASE_MODEL).report.json
	cp $(BASE)/training_curve.svg models/$(BASE_MODEL).training_curve.svg
	@echo "base model: models/$(BASE_MODEL).bin"

# How close a model's music is to pieces it never saw (artifacts/quality.md and .json):
# QUALITY_PIECES pieces of 60 s composed from the model alone, against the files named in
# QUALITY_VALID, with memorisation checked against those in QUALITY_TRAIN (all paths
# relative to QUALITY_CORPUS). `make base-model quality` trains on the split, then measures.
QUALITY_MODEL  ?= models/piano-beats.bin
QUALITY_CORPUS ?= $(BASE_CORPUS)
QUALITY_TRAIN  ?= $(BASE_LIST)
QUALITY_VALID  ?= ../shared/splits/piano-midi-de.valid.txt
QUALITY_PIECES ?= 8
quality: $(BIN)/compose $(BIN)/report
	cargo build --release --locked $(CARGO_FLAGS) --bin quality
	rm -rf $(ART)/quality && mkdir -p $(ART)/quality
	$(BIN)/compose --config $(call q,CONFIG) --input $(call q,QUALITY_MODEL) --no-dataset --outputs $(call q,QUALITY_PIECES) \
	    --seconds 60 --output $(ART)/quality/piece.mid
	$(BIN)/quality --config $(call q,CONFIG) --reference $(call q,QUALITY_CORPUS) --reference-list $(call q,QUALITY_VALID) \
	    --training $(call q,QUALITY_CORPUS) --training-list $(call q,QUALITY_TRAIN) --output $(ART)/quality.json \
	    $(ART)/quality/piece*.mid
	@$(draw_page)

# A corpus the size of MAESTRO (1,276 files under MAESTRO-style names, copies of the files in
# BENCH_CORPUS) through extract and encode, then a minute of training for its rate; prints
# each stage's time and peak memory (GNU time where installed) and an epoch's estimate.
MAESTRO_SIZED := $(ART)/maestro-sized
bench-maestro: $(BIN)/extract $(BIN)/encode $(BIN)/train
	rm -rf $(MAESTRO_SIZED) && mkdir -p $(MAESTRO_SIZED)/midi
	find $(call q,BENCH_CORPUS) -type f \( -iname '*.mid' -o -iname '*.midi' \) | LC_ALL=C sort > $(MAESTRO_SIZED)/sources
	awk '{ f[NR] = $$0 } END { for (i = 0; i < 1276; i++) \
	    printf "%s\tMIDI-Unprocessed_SMF_%02d_R1_2004_01-05_ORIG_MID--AUDIO_%02d_R1_2004_%04d_Track%04d_wav.midi\n", \
	    f[i % NR + 1], i % 23, i % 17, i, i }' $(MAESTRO_SIZED)/sources | \
	    while IFS="$$(printf '\t')" read -r from to; do cp "$$from" "$(MAESTRO_SIZED)/midi/$$to"; done
	$(TIMED) $(BIN)/extract --config $(call q,CONFIG) --input $(MAESTRO_SIZED)/midi --output $(MAESTRO_SIZED)/notes.bin
	$(TIMED) $(BIN)/encode --config $(call q,CONFIG) --input $(MAESTRO_SIZED)/notes.bin --output $(MAESTRO_SIZED)/dataset.bin
	$(TIMED) $(BIN)/train --config $(call q,CONFIG) --set train.init= --input $(MAESTRO_SIZED)/dataset.bin \
	    --output $(MAESTRO_SIZED)/model.bin --max-minutes 1
# GNU time's peak memory where it is installed, else the shell's own timing.
TIMED := $(if $(wildcard /usr/bin/time),/usr/bin/time -f "%C: %e s; peak memory %M KiB")

# Re-renders the bundled sample corpus from its text scores (data/scores/*.score).
corpus:
	cargo run --release --locked -p sample-corpus

clean:
	rm -rf $(STAMPS) $(NOTES) $(DATASET) $(MODEL) $(MODEL).checkpoint $(ART)/*.report.json \
	    $(ART)/training_curve.svg $(ART)/generated_music*.mid $(ART)/generated_music*.svg $(ART)/generated_music*.wav \
	    $(ART)/evaluation* $(ART)/bench.json $(PAGE)

help:
	@echo "make              run extract, encode, train, compose on DATA ("$(call q,DATA)"); writes $(MUSIC)"
	@echo "make DATA=dir     the same on another folder of .mid/.midi files (searched recursively)"
	@echo "make test         the test suite (tests that need ../shared/data, a SoundFont, Chromium or MuseScore skip without them)"
	@echo "make base-model   retrain models/$(BASE_MODEL).bin (BASE_MODEL=piano-beats or piano) on BASE_CORPUS/BASE_LIST (see models/README.md)"
	@echo "make quality      the base model's music against held-out pieces: artifacts/quality.md"
	@echo "make bench-maestro a MAESTRO-sized corpus (1,276 files) through extract, encode and a minute of training"
	@echo "make page         redraw the run's page, artifacts/index.html (make does it too)"
	@echo "make evaluate     held-out loss, music statistics and memorisation: artifacts/evaluation.md"
	@echo "make listen       render the generated music to artifacts/generated_music.wav"
	@echo "make inspect      print what each artifact is and what made it"
	@echo "make bench        speed of every stage on this machine: a table and artifacts/bench.json"
	@echo "make bench-peers  the same beside PyTorch and symusic, installed under target/ (needs python3)"
	@echo "make cuda-check   build the CUDA binaries (toolkit wheels under target/cuda unless CUDA_HOME) and test them"
	@echo "make gpu-check    on an NVIDIA GPU: cuda-check, then the GPU's loss against the CPU's and its speed"
	@echo "make corpus       re-render data/*.mid from data/scores/*.score"
	@echo "make clean        delete the artifacts"
	@echo "variables: CONFIG="$(call q,CONFIG)" ART=$(ART) DATA="$(call q,DATA)" CARGO_FLAGS=$(CARGO_FLAGS)"
