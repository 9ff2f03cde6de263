# Sourced by the table scripts: `run NAME OVERRIDES...` trains one run into $out/NAME with $py and
# appends its wall time to $out/times.txt (time runs with nothing else on the machine).
set -euo pipefail
out=${out:?set out before sourcing benchmarks/runs.sh}
py=${PYTHON:-python}
mkdir -p "$out"
run() {
  local name=$1; shift
  local start=$SECONDS
  "$py" train.py "$@" hydra.run.dir="$out/$name" > "$out/$name.log" 2>&1
  echo "$name $((SECONDS - start))s $*" | tee -a "$out/times.txt"
}
