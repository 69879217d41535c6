# falsecl developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: install test lint typecheck unit demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q --durations=15

test: lint typecheck unit

# The end-to-end job on the bundled Dubai imagery (about 7 minutes on 2 CPU cores): check the data, pretrain
# SimCLR + FALSE on the training tiles, fine-tune DeepLabv3+ on 25 % of the labels, evaluate by sliding window on
# the whole test tiles, and write a georeferenced class map of one test image.
DEMO := runs/demo
demo: $(STAMP)
	$(BIN)/falsecl data check dubai data/dubai_aerial --split train
	$(BIN)/falsecl pretrain --config configs/pretrain/cpu_simclr_false.yaml \
	    --trainer.default_root_dir $(DEMO)/pretrain --trainer.max_epochs 3 \
	    $$(test -f $(DEMO)/pretrain/checkpoints/last.ckpt && echo --ckpt_path last)
	$(BIN)/falsecl finetune --config configs/finetune/cpu_quick.yaml \
	    --trainer.default_root_dir $(DEMO)/finetune --model.backbone_weights $(DEMO)/pretrain/backbone.pt \
	    --data.label_fraction 0.25
	$(BIN)/falsecl evaluate --checkpoint $(DEMO)/finetune \
	    --split test --window 256 --output_dir $(DEMO)/eval
	$(BIN)/falsecl predict --checkpoint $(DEMO)/finetune \
	    --input "data/dubai_aerial/Tile 8/images/image_part_005.jpg" --output $(DEMO)/prediction.tif \
	    --preview $(DEMO)/prediction.png --window 256 --overwrite true
	@echo "demo finished: $(DEMO)/eval/metrics.md, $(DEMO)/prediction.tif, $(DEMO)/prediction.png"

bench: $(STAMP)
	$(BIN)/python benchmarks/loss_speed.py
	$(BIN)/python benchmarks/pretrain_speed.py
	$(BIN)/python benchmarks/inference_speed.py
	$(BIN)/python benchmarks/read_speed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
