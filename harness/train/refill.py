"""Dynamic sampling for the ``data`` extension point (``BatchDecision.resample``, DAPO-style): the dropped groups
of a generation batch are refilled with kept groups of extra generation rounds for fresh prompts. Mixed into
:class:`harness.train.hooks.HookMixin`, whose ``_data_scored`` calls :meth:`RefillMixin._refill`."""
from __future__ import annotations

import torch


class RefillMixin:
    def _refill(self, fn, out: dict, keep: torch.Tensor, weights: torch.Tensor | None, max_rounds: int | None):
        """Replace the dropped groups of this generation batch (DAPO's dynamic sampling). Each round generates and
        scores one more batch of the same size for fresh prompts (:meth:`_draw_groups`) and asks the data hook
        (stage "scored") which of its groups to keep; each process fills its dropped places with its kept groups,
        in round order, until every process is full or ``max_rounds`` rounds ran (None: no limit). Places still
        empty then get back their own dropped groups, which are trained on (the batch keeps its size). Rounds are
        global (every process generates in every round), so collective calls stay aligned. The merged batch gets
        its rewards, token normaliser and advantages (advantage hook) recomputed; each sample keeps its own round's
        weight. Returns (out, weights, rounds, extra completions generated, share of places left unfilled)."""
        acc, g = self.accelerator, self.num_generations
        n, nproc, pi = out["prompt_ids"].size(0), acc.num_processes, acc.process_index
        n_groups, n_all = n // g, n * nproc
        local = slice(pi * n, (pi + 1) * n)

        def whole_groups(k: torch.Tensor) -> torch.Tensor:  # (nproc, groups) kept flags
            kg = k.view(nproc, n_groups, g)
            if not bool((kg == kg[..., :1]).all()):
                raise ValueError(f"data hook of {self.method.name!r}: resample needs keep to drop whole groups")
            return kg[..., 0]

        # one entry per round: (out, local rewards per function, local completion texts, keep, weights)
        rounds = [(out, self._last_rewards_per_func[local], list(self._last_completions), keep, weights)]
        have = whole_groups(keep).sum(1)
        while bool((have < n_groups).any()) and (max_rounds is None or len(rounds) <= max_rounds):
            new_inputs = self._draw_groups(fn, n_groups)
            new = self._score_batch(new_inputs)
            dec = fn(self._scored_context(new_inputs, new), **self.hparams)
            k, w = self._checked_decision(dec, n_all)
            k = torch.ones(n_all, dtype=torch.bool) if k is None else k
            for name, v in (dec.metrics if dec is not None else {}).items():
                if name != "method/frac_tokens_touched":
                    self._metrics["train"][name].append(float(v))
            rounds.append((new, self._last_rewards_per_func[local], list(self._last_completions), k, w))
            have = have + whole_groups(k).sum(1)
        kept = [whole_groups(r[3])[pi] for r in rounds]
        picks = [(r, j) for r in range(len(rounds)) for j in range(n_groups) if kept[r][j]][:n_groups]
        unfilled = n_groups - len(picks)
        picks += [(0, j) for j in range(n_groups) if not kept[0][j]][:unfilled]
        rows = [(r, j * g + i) for r, j in picks for i in range(g)]
        merged = _merge_outputs([r[0] for r in rounds], rows, self._tokenizer.pad_token_id)
        self._last_rewards_per_func = acc.gather(torch.stack([rounds[r][1][i] for r, i in rows]))
        self._last_completions = [rounds[r][2][i] for r, i in rows]
        if any(r[4] is not None for r in rounds):
            w = torch.stack([rounds[r][4][local][i] if rounds[r][4] is not None else torch.tensor(1.0)
                             for r, i in rows])
            weights = acc.gather(w.to(acc.device)).cpu()
        mask = merged["completion_mask"] * merged["tool_mask"] if "tool_mask" in merged else merged["completion_mask"]
        merged["num_items_in_batch"] = acc.gather(mask.sum()).sum()
        self._gen_stash = None  # token statistics of the last round only: recomputed for the merged batch
        fn_adv = self.method.hook("advantage")
        if fn_adv is not None:
            merged["advantages"] = self._method_advantages(fn_adv, merged)
        unfilled = float(acc.gather(torch.tensor([float(unfilled)], device=acc.device)).sum()) / (n_groups * nproc)
        return merged, weights, len(rounds) - 1, (len(rounds) - 1) * n_all, unfilled

    def _draw_groups(self, fn, n_groups: int) -> list:
        """Fresh prompts for a refill round: ``n_groups`` dataset rows per process (the same draw on every process,
        each taking its own slice; without replacement when the dataset is large enough), each repeated G times,
        then through the data hook's "prompts" stage. Drawn with a generator of their own, seeded from the method
        seed but not its stream (TRL's sampler is seeded with the same number: the same stream would re-draw its
        first batch)."""
        ds, g, acc = self.train_dataset, self.num_generations, self.accelerator
        if getattr(self, "_refill_generator", None) is None:
            self._refill_generator = torch.Generator().manual_seed(self._generator.initial_seed() ^ 0x5EEDF111)
        total = n_groups * acc.num_processes
        if len(ds) >= total:
            idx = torch.randperm(len(ds), generator=self._refill_generator)[:total]
        else:
            idx = torch.randint(len(ds), (total,), generator=self._refill_generator)
        mine = idx[acc.process_index * n_groups:(acc.process_index + 1) * n_groups].tolist()
        return self._data_prompts(fn, [dict(ds[int(i)]) for i in mine for _ in range(g)])


def _merge_outputs(outs: list[dict], rows: list[tuple[int, int]], pad_id: int) -> dict:
    """One generation-batch dict from the rows ``rows`` ((index into ``outs``, row), in order) of several TRL
    ``_generate_and_score_completions`` outputs. Per-sample tensors are padded to the widest (``prompt_*``: on the
    left; ``*_ids`` with the pad token, ``tool_mask`` with 1, the rest with 0) and concatenated; lists are
    concatenated; 0-d tensors and other values are the first output's."""
    n = outs[0]["prompt_ids"].size(0)
    merged = {}
    for key, v0 in outs[0].items():
        vals = [o.get(key) for o in outs]
        if isinstance(v0, list) and len(v0) == n:
            merged[key] = [vals[r][i] for r, i in rows]
        elif not torch.is_tensor(v0) or v0.dim() == 0:
            merged[key] = v0
        elif v0.size(0) != n:
            raise NotImplementedError(f"resample cannot merge batch field {key!r} (not one row per sample)")
        else:
            if any(v.dim() > 1 and v.shape[1:] != v0.shape[1:] for v in vals):
                width = max(v.size(1) for v in vals)
                fill = (-1 if key.startswith("token_column:") else pad_id if key.endswith("_ids")
                        else 1 if key == "tool_mask" else 0)  # token columns: -1 off the completion (hooks.py)
                left = key.startswith("prompt_")
                vals = [torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + ((width - v.size(1), 0) if left
                                                 else (0, width - v.size(1))), value=fill) for v in vals]
            merged[key] = torch.stack([vals[r][i] for r, i in rows])
    return merged
