"""Runs of several processes (as ``deepspeed --num_gpus N`` starts them), on CPU with a gloo process group:
each rank reads its own share of the data, only the first writes the model and the log, and a run stopped and
resumed ends where one that never stopped does.

DeepSpeed itself is not installed here; ``AveragingEngine`` stands in for its engine through the calls the
loop makes (backward, step, save_checkpoint, load_checkpoint), so what is tested is the loop's part."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from run_stops import Stopped
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from training import ranks
from training.loop import LAST_CHECKPOINT, METRICS_FILE, STATE_FILE, TrainingLoop, rank_file
from training.streams import ResumableRandomSampler

RECORDS = 12
WORLD = 2


def test_each_rank_takes_its_own_share_of_every_epoch_and_as_many_steps() -> None:
    world = 3

    def share(rank: int, world_size: int) -> list[int]:
        return list(ResumableRandomSampler(range(10), torch.Generator().manual_seed(3), rank, world_size))

    whole, shares = share(0, 1), [share(r, world) for r in range(world)]
    assert [len(share) for share in shares] == [4, 4, 4]  # 10 records padded to 12
    padded = whole + whole[:2]
    assert shares == [padded[r::world] for r in range(world)]
    assert sorted(set().union(*map(set, shares))) == list(range(10))
    with pytest.raises(ValueError, match="rank 3 is not one of 3"):
        ResumableRandomSampler(range(10), torch.Generator(), 3, 3)


def test_a_rank_reads_its_seed_and_gpu_from_the_launchers_environment(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (ranks.rank(), ranks.world_size(), ranks.rank_seed(7)) == (0, 1, 7)  # one process: as it always was
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (ranks.rank(), ranks.world_size(), ranks.is_main()) == (2, 4, False)
    assert ranks.rank_seed(7) == 7 + 2 * ranks.RANK_SEED_STRIDE
    assert ranks.local_device("cpu") == "cpu" and ranks.local_device("cuda") == "cuda"  # no LOCAL_RANK
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks.local_device("cpu") == "cpu"


def test_several_processes_without_deepspeed_are_refused(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="without DeepSpeed"):
        ShardedLineFit(tmp_path, steps=2, engine=False)


class AveragingEngine:
    """DeepSpeed's engine as the loop sees it: averages gradients over the ranks, steps the optimizer and the
    schedule, and keeps each rank's own optimizer state in its checkpoint."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        for param in self.module.parameters():
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()

    def step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict) -> None:
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}
        state |= {"scheduler": self.scheduler.state_dict(), "client": client_state}
        torch.save(state, folder / f"rank{dist.get_rank()}.pt")

    def load_checkpoint(self, load_dir: str, tag: str) -> tuple[str, dict]:
        path = Path(load_dir) / tag / f"rank{dist.get_rank()}.pt"
        state = torch.load(path, weights_only=True)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return str(path), state["client"]


class ShardedLineFit(TrainingLoop):
    """Fits y = 2x on 12 shuffled points, a batch of 2 per rank; notes the points each rank trains on."""

    def __init__(
        self, out: Path, steps: int, save_every: int = 0, stop_at: int = 0, engine: bool = True, empty: int = 0
    ) -> None:
        torch.manual_seed(0)
        self.line, self.stop_at, self.seen = nn.Linear(1, 1), stop_at, []
        self.empty = empty  # the batch (1-based, counted over the run) that comes out empty on rank 1
        self.handed = 0
        self.points = torch.linspace(-1, 1, RECORDS)[:, None]
        generator = torch.Generator().manual_seed(0)
        self.sampler = ResumableRandomSampler(range(RECORDS), generator)
        self.loader = DataLoader(list(range(RECORDS)), batch_size=2, sampler=self.sampler, generator=generator)
        super().__init__(
            self.line, list(self.line.parameters()), out, total_steps=steps, learning_rate=0.1, warmup_steps=1,
            save_every=save_every, deepspeed_config="stand-in" if engine else "",
        )  # fmt: skip

    def _deepspeed(self, config_path: str, micro_batch_size: int) -> AveragingEngine:
        return AveragingEngine(self.line, self.optimizer, self.scheduler)

    def batches(self) -> Iterator[torch.Tensor]:
        self.sampler.start_epoch()
        for indices in self.loader:
            self.sampler.taken += len(indices)
            self.handed += 1
            yield None if ranks.rank() == 1 and self.handed == self.empty else indices  # all its records bad

    def compute_loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if self.step + 1 == self.stop_at:
            raise Stopped
        self.seen.append(batch.tolist())
        points = self.points[batch]
        return (self.line(points) - 2 * points).pow(2).mean(), {}

    def data_state(self) -> dict:
        return self.sampler.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def save_model(self, target: Path, final: bool) -> None:
        save_file({k: v.contiguous() for k, v in self.line.state_dict().items()}, target / "line.safetensors")

    def load_model(self, checkpoint: Path) -> None:
        self.line.load_state_dict(load_file(checkpoint / "line.safetensors"))


def _rank(rank: int, port: int, out: str, runs: list[dict]) -> None:
    """One process of a run of ``WORLD``: each of ``runs`` (ShardedLineFit's stop_at, empty) in turn in ``out``."""
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for number, run in enumerate(runs):
            fit = ShardedLineFit(Path(out), steps=6, save_every=2, **run)
            with contextlib.suppress(Stopped):
                fit.train()
            (Path(out) / f"seen.{number}.rank{rank}.json").write_text(json.dumps(fit.seen))
    finally:
        dist.destroy_process_group()


def _run(out: Path, runs: list[dict]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(_rank, args=(port, str(out), runs), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:  # ranks out of step wait for each other forever
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks hung")


def test_a_run_of_two_ranks_shares_the_data_logs_once_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    _run(tmp_path / "whole", [{}])
    seen = [json.loads((tmp_path / "whole" / f"seen.0.rank{r}.json").read_text()) for r in range(WORLD)]
    first_epoch = [[i for batch in batches[:3] for i in batch] for batches in seen]  # 12 records: 3 steps
    assert not set(first_epoch[0]) & set(first_epoch[1])
    assert sorted(first_epoch[0] + first_epoch[1]) == list(range(RECORDS))
    rows = (tmp_path / "whole" / METRICS_FILE).read_text().splitlines()
    assert len(rows) == 1 + 6  # one header, each step once: the first rank logs

    # Stopped in its second epoch (checkpoint at step 4), then the same command again.
    _run(tmp_path / "stopped", [{"stop_at": 5}, {}])
    checkpoint = tmp_path / "stopped" / LAST_CHECKPOINT
    assert (checkpoint / STATE_FILE).is_file() and (checkpoint / rank_file(STATE_FILE, 1)).is_file()
    assert (checkpoint / "deepspeed" / "last" / "rank1.pt").is_file()
    resumed = [json.loads((tmp_path / "stopped" / f"seen.1.rank{r}.json").read_text()) for r in range(WORLD)]
    assert resumed == [batches[4:] for batches in seen]  # each rank reads on in its own share
    whole, again = (load_file(tmp_path / run / "line.safetensors") for run in ("whole", "stopped"))
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert len((tmp_path / "stopped" / METRICS_FILE).read_text().splitlines()) == 1 + 6

    # One process cannot take over a checkpoint of two: its share of the data was another.
    with pytest.raises(ValueError, match="written by 2 process"):
        ShardedLineFit(tmp_path / "stopped", steps=8, save_every=2, engine=False).train()


def test_an_empty_batch_on_one_rank_keeps_the_ranks_in_step(tmp_path: Path) -> None:
    """Rank 1's second batch has nothing left (every record skipped): it takes the next one, and both ranks
    still take 6 steps, one gradient all-reduce each, so neither waits for the other in a collective."""
    _run(tmp_path, [{"empty": 2}])
    seen = [json.loads((tmp_path / f"seen.0.rank{r}.json").read_text()) for r in range(WORLD)]
    assert [len(batches) for batches in seen] == [6, 6]  # 6 steps each, from 7 batches
    assert (tmp_path / "line.safetensors").is_file()


def test_a_checkpoint_resumes_only_as_it_was_written_with_or_without_deepspeed(tmp_path: Path) -> None:
    ShardedLineFit(tmp_path, steps=2, save_every=1, engine=False).train()
    with pytest.raises(ValueError, match="written without DeepSpeed and this run is with it"):
        ShardedLineFit(tmp_path, steps=3, save_every=1, engine=True).train()
