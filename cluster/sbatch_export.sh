#!/usr/bin/env bash
# Run one rs-embed-dask export inside a single SLURM allocation, without dask-jobqueue.
#
#   sbatch cluster/sbatch_export.sh job.yaml
#
# Task 0 runs the scheduler, the next IO_NODES tasks run IO workers
# (`--resources io=N`, many threads), the GPU tasks run one inference worker per
# GPU (`--resources gpu=1`, one thread), and this script then runs the export
# against the scheduler file.  The job file should set `config: {resume: true}`
# (or pass --resume below): when the allocation ends before the export does,
# submit the same command again and only the unfinished chunks run.
#
#SBATCH --job-name=rsembed-export
#SBATCH --nodes=3
#SBATCH --time=12:00:00
#SBATCH --gres=gpu:4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --output=rsembed-export-%j.log
set -euo pipefail

JOB=${1:?usage: sbatch cluster/sbatch_export.sh JOB.yaml}
IO_NODES=${IO_NODES:-1}               # nodes whose tasks run IO workers
IO_THREADS=${IO_THREADS:-16}          # concurrent fetches per IO worker
GPUS_PER_NODE=${GPUS_PER_NODE:-4}     # inference workers per GPU node
WORKDIR=${WORKDIR:-$PWD/.rsembed-$SLURM_JOB_ID}
LOCAL_DIR=${LOCAL_DIR:-${TMPDIR:-/tmp}}
# lifetime a little under the walltime: workers hand their tasks back before SLURM kills them
LIFETIME=${LIFETIME:-11h40m}

# source /path/to/rs-embed-dask/.venv/bin/activate     # site specific
mkdir -p "$WORKDIR"
SCHED_FILE=$WORKDIR/scheduler.json
rm -f "$SCHED_FILE"

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD=${NODES[0]}
IO_LIST=$(IFS=,; echo "${NODES[*]:0:$IO_NODES}")
GPU_LIST=$(IFS=,; echo "${NODES[*]:$IO_NODES}")
N_GPU_NODES=$(( ${#NODES[@]} - IO_NODES ))

# the scheduler (on the first node, beside the IO workers)
srun --nodes=1 --ntasks=1 --nodelist="$HEAD" --gres=gpu:0 --cpus-per-task=2 --exact \
    dask scheduler --scheduler-file "$SCHED_FILE" --dashboard-address :8787 &
for _ in $(seq 120); do [ -s "$SCHED_FILE" ] && break; sleep 1; done
[ -s "$SCHED_FILE" ] || { echo "the scheduler did not start" >&2; exit 1; }

# IO workers: one per IO node, many threads, no GPU
srun --nodes="$IO_NODES" --ntasks="$IO_NODES" --ntasks-per-node=1 --nodelist="$IO_LIST" \
    --gres=gpu:0 --cpus-per-task=$(( IO_THREADS + 2 )) --exact \
    dask worker --scheduler-file "$SCHED_FILE" --resources "io=$IO_THREADS" --nthreads $(( IO_THREADS + 2 )) \
    --local-directory "$LOCAL_DIR" --lifetime "$LIFETIME" --lifetime-stagger 5m &

# inference workers: one per GPU, one thread each, each task sees one GPU
if [ "$N_GPU_NODES" -gt 0 ]; then
    srun --nodes="$N_GPU_NODES" --ntasks=$(( N_GPU_NODES * GPUS_PER_NODE )) --ntasks-per-node="$GPUS_PER_NODE" \
        --nodelist="$GPU_LIST" --gpus-per-task=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-8}" --exact \
        dask worker --scheduler-file "$SCHED_FILE" --resources gpu=1 --nthreads 1 \
        --local-directory "$LOCAL_DIR" --lifetime "$LIFETIME" --lifetime-stagger 5m &
fi

# the export: validated first (exit 2 on a bad job), waits for the workers, exit 1 on failed models
status=0
rs-embed-dask export "$JOB" --scheduler-file "$SCHED_FILE" --resume || status=$?

kill $(jobs -p) 2>/dev/null || true
wait || true
exit $status
