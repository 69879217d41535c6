# falsecl developer entry points. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: install test lint typecheck unit gis-tools demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# The GIS tests check the outputs with GDAL's own tools (gdalinfo, gdalbuildvrt): install them where missing
# (Debian/Ubuntu as root, as CI runs), so they are never skipped.
gis-tools:
	@command -v gdalinfo >/dev/null && command -v gdalbuildvrt >/dev/null || { \
	    echo "installing gdal-bin (gdalinfo, gdalbuildvrt) for the GIS tests"; \
	    apt-get install -y -q gdal-bin || { apt-get update -q && apt-get install -y -q gdal-bin; } || { \
	    echo "install GDAL's command-line tools (Debian: apt-get install gdal-bin; macOS: brew install gdal)"; \
	    exit 1; }; }

unit: $(STAMP) gis-tools
	$(BIN)/pytest -q --durations=15

test: lint typecheck unit

# The end-to-end job on the bundled Dubai imagery, sized for about 10 minutes on 2 CPU cores: check the data,
# pretrain SimCLR + FALSE for one epoch on the training tiles, fine-tune DeepLabv3+ on 25 % of the labels
# (1000 steps, best checkpoint chosen on the val tile), evaluate by sliding window on the whole test tiles (3, 8),
# map one test image, and print a summary. Extra arguments for a step: DEMO_PRETRAIN_ARGS, DEMO_FINETUNE_ARGS,
# DEMO_EVAL_ARGS (e.g. `make demo DEMO=runs/demo_smoke DEMO_FINETUNE_ARGS="--trainer.max_steps 4"`).
DEMO := runs/demo
DEMO_IMAGE := data/dubai_aerial/Tile 8/images/image_part_005.jpg
DEMO_PRETRAIN_ARGS ?=
DEMO_FINETUNE_ARGS ?=
DEMO_EVAL_ARGS ?=
demo: $(STAMP)
	@mkdir -p $(DEMO) && date +%s > $(DEMO)/started && : > $(DEMO)/timings.txt
	$(BIN)/falsecl data check dubai data/dubai_aerial --split train
	@echo "data check $$(( $$(date +%s) - $$(cat $(DEMO)/started) )) s" >> $(DEMO)/timings.txt; date +%s > $(DEMO)/stage
	$(BIN)/falsecl pretrain --config configs/pretrain/cpu_demo.yaml \
	    --trainer.default_root_dir $(DEMO)/pretrain $(DEMO_PRETRAIN_ARGS) \
	    $$(test -f $(DEMO)/pretrain/checkpoints/last.ckpt && echo --ckpt_path last)
	@echo "pretrain   $$(( $$(date +%s) - $$(cat $(DEMO)/stage) )) s" >> $(DEMO)/timings.txt; date +%s > $(DEMO)/stage
	$(BIN)/falsecl finetune --config configs/finetune/cpu_demo.yaml \
	    --trainer.default_root_dir $(DEMO)/finetune --model.backbone_weights $(DEMO)/pretrain/backbone.pt \
	    $(DEMO_FINETUNE_ARGS)
	@echo "finetune   $$(( $$(date +%s) - $$(cat $(DEMO)/stage) )) s" >> $(DEMO)/timings.txt; date +%s > $(DEMO)/stage
	$(BIN)/falsecl evaluate --checkpoint $(DEMO)/finetune --split test --window 512 --overlap 0.25 \
	    --precision auto --progress false --output_dir $(DEMO)/eval $(DEMO_EVAL_ARGS)
	@echo "evaluate   $$(( $$(date +%s) - $$(cat $(DEMO)/stage) )) s" >> $(DEMO)/timings.txt; date +%s > $(DEMO)/stage
	$(BIN)/falsecl predict --checkpoint $(DEMO)/finetune --input "$(DEMO_IMAGE)" \
	    --output $(DEMO)/prediction.tif --preview $(DEMO)/prediction.png --window 512 \
	    --precision auto --overwrite true
	@echo "predict    $$(( $$(date +%s) - $$(cat $(DEMO)/stage) )) s" >> $(DEMO)/timings.txt
	@echo
	@echo "================ falsecl demo: DeepLabv3+ on 25 % of the labels, whole test tiles 3 and 8 ================"
	@cat $(DEMO)/eval/metrics.md
	@echo
	@echo "class map  : $(DEMO)/prediction.tif   (GeoTIFF with colour table and class names; open in QGIS)"
	@echo "preview    : $(DEMO)/prediction.png   ($(DEMO_IMAGE))"
	@echo "report     : $(DEMO)/eval/metrics.md, metrics.json, confusion_matrix.png"
	@echo "model card : $(DEMO)/finetune/model.json"
	@echo "stages     : $$(paste -sd, $(DEMO)/timings.txt)"
	@echo "took       : $$(( $$(date +%s) - $$(cat $(DEMO)/started) )) s"

bench: $(STAMP)
	$(BIN)/python benchmarks/loss_speed.py
	$(BIN)/python benchmarks/pretrain_speed.py
	$(BIN)/python benchmarks/inference_speed.py
	$(BIN)/python benchmarks/read_speed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
