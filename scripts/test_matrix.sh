#!/usr/bin/env bash
# Run the whole test suite once per CPU code path this machine offers, with one thread and with all cores, so a
# float comparison that holds only on one CPU fails here rather than on a user's machine.
#
#   scripts/test_matrix.sh [pytest args]          e.g. scripts/test_matrix.sh -q -x
#   MIRAGE_TEST_MATRIX="default:1 avx2:0" scripts/test_matrix.sh    a chosen subset (capability:threads, 0 = all)
#
# A capability below the machine's own also caps MKL and oneDNN (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA):
# ATEN_CPU_CAPABILITY alone picks only ATen's own vectorised kernels, while the GEMMs would keep using AVX-512 and
# hide what an AVX2-only host (many AMD EPYC) computes. Exit status: the number of failed configurations.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

offered="default"
grep -qw avx2 /proc/cpuinfo 2>/dev/null && offered="$offered avx2"
grep -qw avx512f /proc/cpuinfo 2>/dev/null && grep -qw avx512bw /proc/cpuinfo && offered="$offered avx512"
configs="${MIRAGE_TEST_MATRIX:-}"
if [ -z "$configs" ]; then
  for cap in $offered; do configs="$configs $cap:1 $cap:0"; done
fi

failed=0
summary=""
for config in $configs; do
  cap="${config%%:*}"; threads="${config##*:}"
  case " $offered " in *" $cap "*) ;; *) echo "test_matrix: this CPU does not offer $cap; skipped" >&2; continue ;; esac
  env_args=(ATEN_CPU_CAPABILITY="$cap")
  case "$cap" in
    default) env_args+=(MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41) ;;
    avx2) env_args+=(MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) ;;
  esac
  [ "$threads" != 0 ] && env_args+=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads")
  label="$cap, $([ "$threads" = 0 ] && echo "all cores" || echo "$threads thread(s)")"
  echo "=== test_matrix: $label (${env_args[*]})" >&2
  start=$SECONDS
  if env "${env_args[@]}" bash "$ROOT/scripts/test.sh" "$@"; then result="passed"; else result="FAILED"; failed=$((failed + 1)); fi
  summary="$summary\n  $label: $result in $((SECONDS - start)) s"
done
echo -e "test_matrix:$summary" >&2
exit "$failed"
