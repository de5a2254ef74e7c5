#!/usr/bin/env bash
# What bench/gpu_run.sh needs on a GPU machine with no network, fetched beforehand into .whl/ (ignored by
# git): the wheels of the notebook tools for CPython 3.12 on x86-64 Linux, and the course's data folder
# packed into one file.
#
#   bash bench/gpu_wheels.sh [DATA_FOLDER]     # DATA_FOLDER: default $COMPANION_DATA, else ../shared/data
#
# The machine is expected to hold Python 3.12, torch, numpy, matplotlib, tqdm, pytest, pytest-xdist,
# hypothesis, scikit-learn, pyyaml, packaging, psutil, pygments, markdown-it-py, attrs, python-dateutil
# and typing-extensions. The wheels below are every package that nbformat, nbclient, ipykernel,
# jupyter_client, jupytext and nbval need beyond those (their Requires-Dist, followed to the end), at
# versions tested together; each is fetched without its dependencies, so nothing else comes along.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=(
    asttokens==3.0.2 comm==0.2.3 debugpy==1.8.22 executing==2.3.0 fastjsonschema==2.22.3
    ipykernel==7.4.0 ipython==9.18.1 ipython-pygments-lexers==1.1.1 jedi==0.20.1 jsonschema==4.26.0
    jsonschema-specifications==2025.9.1 jupyter-client==8.10.0 jupyter-core==5.9.1 jupytext==1.19.6
    matplotlib-inline==0.2.2 mdit-py-plugins==0.7.0 nbclient==0.11.0 nbformat==5.11.1 nbval==0.11.0
    nest-asyncio2==1.7.4 parso==0.8.7 pexpect==4.9.0 platformdirs==4.14.9 prompt-toolkit==3.0.53
    ptyprocess==0.7.0 pure-eval==0.2.4 pyzmq==27.3.0 referencing==0.37.0 rpds-py==2026.9.1
    stack-data==0.6.3 tornado==6.6.1 traitlets==5.16.1 wcwidth==0.9.4
)

mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d .whl "${WHEELS[@]}"

# One version of each package: two would stop the whole install on the GPU machine.
duplicates=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr '[:upper:]' '[:lower:]' | sort | uniq -d)
if [ -n "$duplicates" ]; then
    echo "more than one wheel of: $duplicates (empty .whl/ and run again)" >&2
    exit 1
fi

data=${1:-${COMPANION_DATA:-../shared/data}}
if [ -d "$data" ]; then
    tar -czf .whl/course-data.tar.gz -C "$data" .
else
    echo "no data folder at $data: the chapters will look for \$COMPANION_DATA on the GPU machine" >&2
fi
echo "$(ls .whl/*.whl | wc -l) wheels; .whl/ holds $(du -sh .whl | cut -f1)"
