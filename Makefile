# aegis-mcp: build, install and test. `make help` lists the targets.
PREFIX ?= $(HOME)/.local
VENV ?= $(CURDIR)/.venv
INSTALL_VENV ?= $(PREFIX)/share/aegis-mcp/venv
PYTHON ?= $(shell command -v /usr/bin/python3 || command -v python3)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUILD_TIME := $(shell scripts/build_info.sh time)
GIT_HASH := $(shell scripts/build_info.sh git)
BUILD_INFO := runner/aegis_mcp/_build_info.py
HOOKS_FLAGS = VERSION="$(VERSION)" BUILD_TIME="$(BUILD_TIME)" GIT_HASH="$(GIT_HASH)"

.PHONY: help build release install uninstall clean test test-fast vm-test vm-box bench run lint setup

help:
	@echo "make setup     set up the dev virtualenv ($(VENV)), system packages and the hooks library"
	@echo "make build     build stamp + hooks/libaegis_hooks.so (debug flags)"
	@echo "make release   the same with optimisation"
	@echo "make install   install into $(INSTALL_VENV), hooks into $(PREFIX)/lib, aegis-mcp into $(PREFIX)/bin"
	@echo "make uninstall remove what install put in place"
	@echo "make run       install, then run claude under aegis-mcp (the bundled demo agent if claude is missing)"
	@echo "make test      set up and run the test suite (with the VM tests where qemu runs)"
	@echo "make test-fast the suite without the tests that boot the VM"
	@echo "make vm-test   build (cached) and boot the stock-kernel VM, run the in-VM tests there"
	@echo "make vm-box    package the VM image as a libvirt Vagrant box"
	@echo "make bench     set up and print the benchmark table"
	@echo "make clean     remove build products"

# The stamp and the hooks library are written together so that their build
# time and git hash agree; `aegis-mcp --version` warns when they don't.
# Bytecode is compiled here as pip does on install: an environment with
# PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start
# (tens of milliseconds on each agent start).
build:
	@printf '"""Written by `make build`: when and from what this package was built."""\n\nBUILD_TIME = "%s"\nGIT_HASH = "%s"\n' "$(BUILD_TIME)" "$(GIT_HASH)" > $(BUILD_INFO)
	$(MAKE) -C hooks --no-print-directory $(HOOKS_FLAGS) CFLAGS_OPT="-O1 -g"
	@$(PYTHON) -m compileall -q -j 0 runner/aegis_mcp >/dev/null

release:
	@printf '"""Written by `make build`: when and from what this package was built."""\n\nBUILD_TIME = "%s"\nGIT_HASH = "%s"\n' "$(BUILD_TIME)" "$(GIT_HASH)" > $(BUILD_INFO)
	$(MAKE) -C hooks --no-print-directory $(HOOKS_FLAGS) CFLAGS_OPT="-O2"
	@$(PYTHON) -m compileall -q -j 0 runner/aegis_mcp >/dev/null

setup:
	scripts/bootstrap.sh

install: setup release
	@test -x $(INSTALL_VENV)/bin/python || $(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps .
	$(INSTALL_VENV)/bin/pip install -q --disable-pip-version-check .
	install -d $(PREFIX)/bin $(PREFIX)/lib
	install -m 0755 hooks/libaegis_hooks.so $(PREFIX)/lib/libaegis_hooks.so
	install -d $(INSTALL_VENV)/share/aegis-mcp/images/base
	install -m 0644 images/base/Containerfile images/base/packages $(INSTALL_VENV)/share/aegis-mcp/images/base/
	ln -sf $(INSTALL_VENV)/bin/aegis-mcp $(PREFIX)/bin/aegis-mcp
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "note: add $(PREFIX)/bin to your PATH";; esac
	@$(PREFIX)/bin/aegis-mcp --version

uninstall:
	rm -f $(PREFIX)/bin/aegis-mcp $(PREFIX)/lib/libaegis_hooks.so
	rm -rf $(INSTALL_VENV)

run: install
	@if command -v claude >/dev/null; then exec $(PREFIX)/bin/aegis-mcp claude; \
	else echo "claude is not installed: running the bundled stand-in agent (aegis-mcp demo)"; \
	exec $(PREFIX)/bin/aegis-mcp demo; fi

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not vm" $(PYTEST_ARGS)

# VM_ARGS: pytest arguments for inside the VM (test ids replace tests/vm/in_vm_tests.txt).
vm-test: setup
	scripts/vm.sh test $(VM_ARGS)

vm-box: setup
	scripts/vm.sh box

bench: setup
	scripts/setup_bench.sh || echo "bench set-up incomplete: the rows measured against srt say why they skip"
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check runner tests bench
	$(VENV)/bin/ruff format --check runner tests bench

clean:
	$(MAKE) -C hooks --no-print-directory clean
	rm -f $(BUILD_INFO)
	rm -rf build dist runner/*.egg-info .pytest_cache
	find runner -name __pycache__ -type d -prune -exec rm -rf {} +
