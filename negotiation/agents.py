"""Negotiation agents: the small FAIR interface (``feed_context / read / write / choose / update``), batched.

An agent plays ``B`` games at once. :meth:`Agent.feed_context` starts them (one context per game, game ids
``0..B-1``); the dialogue loop (:func:`negotiation.dialog.play`) then asks it to ``write`` a message in
some of the games, shows it the partner's messages with ``read``, and at the end asks it to ``choose`` and
tells it the outcomes with ``update``.

Messages are token lists ending with ``<eos>`` or ``<selection>``, without the speaker prefix (the agent adds
``YOU:`` to what it writes and ``THEM:`` to what it reads), so agents with different vocabularies can talk.

:class:`RnnAgent` wraps a :class:`~negotiation.model.DialogModel` (FAIR calls it ``LstmAgent`` although the
model uses GRUs). It keeps, per game, the goal vector, the GRU state, every token read or written with the
state after it (for the selection module), and the log-probability of every token it wrote and of its
choice, so REINFORCE (thesis eq. 3.8) can be built on it: with ``track_grad=True`` those log-probabilities
carry gradients.

:class:`HumanAgent` is a person at a terminal (one game at a time), for ``negotiation chat``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol, TextIO, runtime_checkable

import torch

from negotiation.corpus import EOS, SELECTION
from negotiation.domain import ITEMS, Context, Outcome, Split, score
from negotiation.model import ChoiceLogits, DialogModel, concat_rows

DEFAULT_TEMPERATURE = 0.5
"""Sampling temperature of Lewis et al.'s self-play and RL (``--temperature 0.5``)."""
DEFAULT_MAX_WORDS = 50
"""Longest message an :class:`RnnAgent` writes, terminator included (FAIR: 100). 99.9% of the corpus
messages are shorter; a message reaching it ends with a forced ``<eos>``."""


@runtime_checkable
class Agent(Protocol):
    """What the dialogue loop needs from a negotiator playing ``B`` games at once.

    Game ids are ``0..B-1`` in the order of the contexts given to :meth:`feed_context`. ``games`` arguments
    list distinct game ids; the loop never asks a game that has ended.
    """

    name: str

    def feed_context(self, contexts: Sequence[Context]) -> None:
        """Start ``len(contexts)`` new games, forgetting any previous ones."""
        ...

    def write(self, games: Sequence[int]) -> list[list[str]]:
        """One message per listed game (tokens ending with ``<eos>`` or ``<selection>``, no prefix)."""
        ...

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        """Take in the partner's message in each listed game."""
        ...

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        """What this side takes in each listed game (all when None), or None for no deal."""
        ...

    def update(self, outcomes: Sequence[Outcome]) -> None:
        """The result of every game, from this side's view: ``scores = (mine, partner's)``."""
        ...


class _Ragged:
    """Per-game sequences appended in chunks, padded on demand without in-place writes (autograd-safe)."""

    def __init__(self, n: int, trailing: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.n, self.trailing, self.dtype, self.device = n, trailing, dtype, device
        self._chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def append(self, games: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor) -> None:
        """``values`` ``(A, L, *trailing)``: row ``i`` holds ``lengths[i]`` new items of game ``games[i]``."""
        self._chunks.append((games, values, lengths))
        self._cache = None

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, max_len, *trailing)`` zero-padded values in append order per game, and ``(n,)`` lengths."""
        if self._cache is not None:
            return self._cache
        if not self._chunks:
            empty = torch.zeros(self.n, 0, *self.trailing, dtype=self.dtype, device=self.device)
            return empty, torch.zeros(self.n, dtype=torch.long, device=self.device)
        keys, vals = [], []
        for games, values, lengths in self._chunks:
            L = values.size(1)
            valid = torch.arange(L, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)
            keys.append(games.unsqueeze(1).expand(-1, L)[valid])
            vals.append(values[valid])
        key, val = torch.cat(keys), torch.cat(vals)
        order = torch.sort(key, stable=True).indices
        key, val = key[order], val[order]
        counts = torch.bincount(key, minlength=self.n)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(key.numel(), device=self.device) - starts[key]
        width = int(counts.max()) if key.numel() else 0
        out = torch.zeros(self.n, width, *self.trailing, dtype=val.dtype, device=self.device)
        self._cache = (out.index_put((key, pos), val), counts)
        return self._cache


class AgentSnapshot(NamedTuple):
    """An :class:`RnnAgent`'s view of some games: GRU ``state`` ``(A, H)``, goal vectors ``ctx``, every token read
    or written (``tokens`` ``(A, T)``, ``lengths`` ``(A,)``) with the state after it (``hiddens`` ``(A, T, H)``),
    and the contexts."""

    state: torch.Tensor
    ctx: torch.Tensor
    tokens: torch.Tensor
    hiddens: torch.Tensor
    lengths: torch.Tensor
    contexts: list[Context]


class RnnAgent:
    """A :class:`~negotiation.model.DialogModel` negotiating ``B`` games at once.

    Args:
        model: the dialogue model (its device is used for every tensor).
        name: a label for transcripts and logs.
        temperature: word sampling temperature (0: greedy).
        max_words: longest message, terminator included.
        sample_choice: sample the final choice from the softmax over legal choices instead of taking the
            highest-scoring one.
        dropout: keep the model in training mode (dropout on) while playing; default eval mode. The agent
            sets the mode in :meth:`feed_context`.
        track_grad: record differentiable log-probabilities (for REINFORCE); otherwise everything runs
            without autograd.
        seed: seed of the agent's own sampling generator (None: torch's global generator).

    After a batch of games: :meth:`written_logprobs` (per game, every token it wrote, in order),
    :attr:`choice_logprobs` (``(B,)``, log-probability of each choice among the legal choices) and
    :attr:`outcomes` (set by :meth:`update`).
    """

    def __init__(self, model: DialogModel, *, name: str = "rnn", temperature: float = DEFAULT_TEMPERATURE,
                 max_words: int = DEFAULT_MAX_WORDS, sample_choice: bool = False, dropout: bool = False,
                 track_grad: bool = False, seed: int | None = None) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.model = model
        self.name = name
        self.temperature = temperature
        self.max_words = max_words
        self.sample_choice = sample_choice
        self.dropout = dropout
        self.track_grad = track_grad
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.contexts: list[Context] = []
        self.outcomes: list[Outcome] | None = None
        self._forced: set[int] = set()
        self._reset(0)

    # --- state -----------------------------------------------------------------------------------------

    def _reset(self, n: int) -> None:
        dev, H = self.model.device, self.model.config.lang_hidden
        dtype = self.model.word_embed.weight.dtype
        self._ctx = torch.zeros(n, self.model.config.ctx_hidden, device=dev, dtype=dtype)
        self._state = torch.zeros(n, H, device=dev, dtype=dtype)
        self._tokens = _Ragged(n, (), torch.long, dev)
        self._hiddens = _Ragged(n, (H,), dtype, dev)
        self._logprobs = _Ragged(n, (), dtype, dev)
        self.choice_logprobs = torch.zeros(n, device=dev, dtype=dtype)
        self.choices: list[Split | None] = [None] * n

    @property
    def num_games(self) -> int:
        return len(self.contexts)

    def _index(self, games: Sequence[int]) -> torch.Tensor:
        ids = [int(g) for g in games]
        bad = [g for g in ids if not 0 <= g < self.num_games]
        if bad:
            raise IndexError(f"{self.name}: game ids {bad} out of range 0..{self.num_games - 1}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.name}: repeated game ids in {ids}")
        return torch.tensor(ids, dtype=torch.long, device=self.model.device)

    def _grad(self) -> torch.autograd.grad_mode.set_grad_enabled:
        return torch.set_grad_enabled(self.track_grad)

    def _read_ids(self, idx: torch.Tensor, seqs: Sequence[Sequence[int]]) -> None:
        dev = self.model.device
        width = max(len(s) for s in seqs)
        rows = [[*s, *([self.model.pad_id] * (width - len(s)))] for s in seqs]
        tokens = torch.tensor(rows, dtype=torch.long).to(dev)  # built on the CPU, one copy to the device
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long).to(dev)
        hiddens, last = self.model.read(tokens, lengths, self._state[idx], self._ctx[idx])
        self._state = self._state.index_put((idx,), last)
        self._tokens.append(idx, tokens, lengths)
        self._hiddens.append(idx, hiddens, lengths)

    # --- the Agent interface ----------------------------------------------------------------------------

    def feed_context(self, contexts: Sequence[Context]) -> None:
        self.model.train(self.dropout)
        self.contexts = list(contexts)
        self.outcomes = None
        self._forced = set()
        self._reset(len(self.contexts))
        dev = self.model.device
        if self.seed is not None and (self._generator is None or self._generator.device != dev):
            self._generator = torch.Generator(device=dev)
            self._generator.manual_seed(self.seed)
        if self.contexts:
            ctx = torch.tensor([c.to_ints() for c in self.contexts], dtype=torch.long, device=dev)
            with self._grad():
                self._ctx = self.model.encode_context(ctx)

    def _take_in(self, games: Sequence[int], messages: Sequence[Sequence[str]], prefix: int) -> None:
        """Read ``messages`` in the listed games after the speaker ``prefix`` (YOU: or THEM: id)."""
        if len(games) != len(messages):
            raise ValueError(f"{self.name}: {len(messages)} messages for {len(games)} games")
        if not games:
            return
        for g, m in zip(games, messages):
            if not m or m[-1] not in (EOS, SELECTION):
                raise ValueError(f"{self.name}: message in game {g} must end with {EOS} or {SELECTION}, got {list(m)}")
        idx = self._index(games)
        with self._grad():
            self._read_ids(idx, [[prefix, *self.model.words.ids(m)] for m in messages])

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        self._take_in(games, messages, self.model.them_id)

    def force_selection(self, games: Sequence[int]) -> None:
        """Make the agent say ``<selection>`` the next time it writes in the listed games (the protocol of the
        thesis author's released attack code: after a successful reactive edit the target selects)."""
        self._index(games)
        self._forced.update(int(g) for g in games)

    def write(self, games: Sequence[int]) -> list[list[str]]:
        if not games:
            return []
        forced = [g for g in games if g in self._forced]
        if forced:
            self._forced.difference_update(forced)
            self.say(forced, [[SELECTION]] * len(forced))
            rest = [g for g in games if g not in forced]
            said = dict(zip(rest, self.write(rest)))
            return [[SELECTION] if g in forced else said[g] for g in games]
        idx = self._index(games)
        with self._grad():
            self._read_ids(idx, [[self.model.you_id]] * len(games))
            out = self.model.write(self._state[idx], self._ctx[idx], max_words=self.max_words,
                                   temperature=self.temperature, generator=self._generator)
            self._state = self._state.index_put((idx,), out.state)
            self._tokens.append(idx, out.tokens, out.lengths)
            self._hiddens.append(idx, out.hiddens, out.lengths)
            self._logprobs.append(idx, out.logprobs, out.lengths)
        rows, lengths = out.tokens.tolist(), out.lengths.tolist()
        return [self.model.words.tokens(r[:n]) for r, n in zip(rows, lengths)]

    def draft(self, games: Sequence[int]) -> list[list[str]]:
        """What :meth:`write` would say in the listed games, without saying it (the agent's state is unchanged;
        the sampling generator advances). White-box attackers edit these drafts before :meth:`say`."""
        if not games:
            return []
        idx = self._index(games)
        with torch.no_grad():
            you = torch.full((len(games), 1), self.model.you_id, dtype=torch.long, device=self.model.device)
            _, state = self.model.read(you, torch.ones(len(games), dtype=torch.long, device=you.device),
                                       self._state[idx], self._ctx[idx])
            out = self.model.write(state, self._ctx[idx], max_words=self.max_words, temperature=self.temperature,
                                   generator=self._generator)
        rows, lengths = out.tokens.tolist(), out.lengths.tolist()
        return [self.model.words.tokens(r[:n]) for r, n in zip(rows, lengths)]

    def say(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        """Record ``messages`` as written by this agent in the listed games (no log-probabilities: they are not
        the agent's own samples). Tokens outside its vocabulary become ``<unk>``."""
        self._take_in(games, messages, self.model.you_id)

    def snapshot(self, games: Sequence[int]) -> AgentSnapshot:
        """The agent's state in the listed games, detached (white-box access for attacks)."""
        idx = self._index(games)
        tokens, lengths = self._tokens.padded()
        hiddens, _ = self._hiddens.padded()
        return AgentSnapshot(self._state[idx].detach(), self._ctx[idx].detach(), tokens[idx], hiddens[idx].detach(),
                             lengths[idx], [self.contexts[g] for g in games])

    def choice_logits(self, games: Sequence[int] | None = None) -> ChoiceLogits:
        """Scores of every legal choice in the listed games (all when None), from the dialogue so far."""
        games = range(self.num_games) if games is None else games
        idx = self._index(games)
        with self._grad():
            tokens, lengths = self._tokens.padded()
            hiddens, _ = self._hiddens.padded()
            slots = self.model.selection_logits(tokens[idx], hiddens[idx], lengths[idx], self._ctx[idx])
            return self.model.choice_logits(slots, [self.contexts[g].counts for g in games])

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        games = list(range(self.num_games) if games is None else games)
        if not games:
            return []
        scores = self.choice_logits(games)
        with self._grad():
            logp = torch.log_softmax(scores.logits, dim=-1)
            if self.sample_choice:
                pick = torch.multinomial(logp.detach().exp(), 1, generator=self._generator).squeeze(1)
            else:
                pick = scores.logits.argmax(dim=-1)
            lp = logp.gather(1, pick.unsqueeze(1)).squeeze(1)
            self.choice_logprobs = self.choice_logprobs.index_put((self._index(games),), lp)
        out = [scores.choices[i][c] for i, c in enumerate(pick.tolist())]
        for g, c in zip(games, out):
            self.choices[g] = c
        return out

    def update(self, outcomes: Sequence[Outcome]) -> None:
        """Store the outcomes (a supervised agent does not learn from them; an RL agent overrides this)."""
        if len(outcomes) != self.num_games:
            raise ValueError(f"{self.name}: {len(outcomes)} outcomes for {self.num_games} games")
        self.outcomes = list(outcomes)

    # --- inspection -------------------------------------------------------------------------------------

    def written_logprobs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N)`` log-probability of every token this agent wrote in each game, in order (0-padded),
        and ``(B,)`` how many; forced ``<eos>`` tokens count with log-prob 0."""
        return self._logprobs.padded()

    def token_ids(self, game: int) -> list[int]:
        """Every token this agent has read or written in ``game``, from its own view (prefixes included)."""
        self._index([game])
        tokens, lengths = self._tokens.padded()
        return tokens[game, : int(lengths[game])].tolist()

    def transcript(self, game: int) -> list[str]:
        """:meth:`token_ids` as tokens: ``YOU: ... <eos> THEM: ... <selection>``."""
        return self.model.words.tokens(self.token_ids(game))


class RolloutAgent:
    """Goal-based decoding (Lewis et al., 2017, "dialogue rollouts"): an :class:`RnnAgent` that, at each of its
    turns, samples ``candidates`` messages, plays each forward ``rollouts`` times with its own model writing
    both sides (the partner's messages after ``THEM:``, its own after ``YOU:``, at the agent's temperature) until
    a ``<selection>`` or ``rollout_turns`` more messages, and says the candidate with the highest mean rollout
    score. As in FAIR's rollout agent, a rollout scores the value to the agent of its most likely choice
    times that choice's probability (no deal: 0); the defaults are those of FAIR's current code (5 candidates, 3
    rollouts; its 2017 code: 10 and 5). All candidates and rollouts of the games planned together are one batch
    of rows.

    Everything else (reading, choosing, outcomes) is the wrapped agent's; ``name``, ``model`` and ``seed``
    are its. Its sampling generator draws the candidates and rollouts; ``max_rows`` bounds the rows of one
    batch (games are planned in chunks).
    """

    def __init__(self, agent: RnnAgent, *, candidates: int = 5, rollouts: int = 3, rollout_turns: int = 10,
                 max_rows: int = 2048) -> None:
        if candidates < 1 or rollouts < 1 or rollout_turns < 0:
            raise ValueError(f"candidates and rollouts must be >= 1 and rollout_turns >= 0, got {candidates}, "
                             f"{rollouts} and {rollout_turns}")
        if agent.track_grad:
            raise ValueError("a rollout agent plays without gradients (track_grad=False)")
        self.agent, self.candidates, self.rollouts, self.rollout_turns = agent, candidates, rollouts, rollout_turns
        self.max_rows = max_rows
        self.name, self.model = agent.name, agent.model

    # --- the Agent interface (delegated) ------------------------------------------------------------------

    def feed_context(self, contexts: Sequence[Context]) -> None:
        self.agent.feed_context(contexts)

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        self.agent.read(games, messages)

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        return self.agent.choose(games)

    def update(self, outcomes: Sequence[Outcome]) -> None:
        self.agent.update(outcomes)

    def write(self, games: Sequence[int]) -> list[list[str]]:
        games = list(games)
        if not games:
            return []
        step = max(1, self.max_rows // (self.candidates * self.rollouts))
        best: list[list[str]] = []
        with torch.no_grad():
            for k in range(0, len(games), step):
                best += self._plan(games[k : k + step])
        self.agent.say(games, best)
        return best

    # --- planning ---------------------------------------------------------------------------------------

    def _say(self, state: torch.Tensor, ctx: torch.Tensor, prefix: int,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every row reads ``prefix`` and writes a message: tokens and hiddens (prefix first), lengths, state."""
        m, a = self.model, self.agent
        rows = state.size(0)
        pre = torch.full((rows, 1), prefix, dtype=torch.long, device=state.device)
        one = torch.ones(rows, dtype=torch.long, device=state.device)
        pre_hid, state = m.read(pre, one, state, ctx)
        out = m.write(state, ctx, max_words=a.max_words, temperature=a.temperature, generator=a._generator)
        toks, lens = concat_rows(pre, one, out.tokens, out.lengths)
        hids, _ = concat_rows(pre_hid, one, out.hiddens, out.lengths)
        return toks, hids, lens, out.state

    def _plan(self, games: list[int]) -> list[list[str]]:
        m, a = self.model, self.agent
        n, N, M = len(games), self.candidates, self.rollouts
        view = a.snapshot(games)
        # candidates: n x N rows, game-major
        cs = torch.arange(n, device=m.device).repeat_interleave(N)
        ctx = view.ctx[cs]
        c_tok, c_hid, c_len, c_state = self._say(view.state[cs], ctx, m.you_id)
        ended = c_tok[torch.arange(n * N, device=m.device), c_len - 1] == m.sel_id
        tok, length = concat_rows(view.tokens[cs], view.lengths[cs], c_tok, c_len)
        hid, _ = concat_rows(view.hiddens[cs], view.lengths[cs], c_hid, c_len)
        # rollouts: n x N x M rows
        rs = torch.arange(n * N, device=m.device).repeat_interleave(M)
        tok, hid, length, state = tok[rs], hid[rs], length[rs], c_state[rs]
        ended, ctx = ended[rs], ctx[rs]
        for turn in range(self.rollout_turns):
            if bool(ended.all()):
                break
            prefix = m.them_id if turn % 2 == 0 else m.you_id
            new_tok, new_hid, new_len, new_state = self._say(state, ctx, prefix)
            add = torch.where(ended, torch.zeros_like(new_len), new_len)
            tok, length2 = concat_rows(tok, length, new_tok, add)
            hid, _ = concat_rows(hid, length, new_hid, add)
            length = length2
            state = torch.where(ended.unsqueeze(1), state, new_state)
            last = new_tok[torch.arange(new_tok.size(0), device=m.device), new_len - 1]
            ended = ended | (last == m.sel_id)
        contexts = [view.contexts[i] for i in cs[rs].tolist()]
        slots = m.selection_logits(tok, hid, length, ctx)
        choice = m.choice_logits(slots, [c.counts for c in contexts])
        prob, pick = torch.softmax(choice.logits, dim=1).max(dim=1)
        values = [0.0 if choice.choices[r][k] is None else float(score(choice.choices[r][k], contexts[r].values))
                  for r, k in enumerate(pick.tolist())]
        weighted = torch.tensor(values, device=prob.device) * prob
        expected = weighted.view(n, N, M).mean(dim=2)
        best = expected.argmax(dim=1).tolist()  # the first of equal candidates
        rows = [g * N + b for g, b in enumerate(best)]
        toks, lens = c_tok[rows].tolist(), c_len[rows].tolist()
        return [m.words.tokens(t[1:k]) for t, k in zip(toks, lens)]  # without the YOU: prefix


_WORD = re.compile(r"[a-z0-9]+(?:['`][a-z]+)*|[^\sa-z0-9]")
SELECT_COMMANDS: tuple[str, ...] = (SELECTION, "/select", "/selection")
"""What a person types to end the negotiation (the message ``<selection>``)."""


def tokenize_message(text: str) -> list[str]:
    """A typed line as corpus tokens: lower case, punctuation split off (``"Deal, thanks!"`` ->
    ``["deal", ",", "thanks", "!"]``), apostrophes kept inside words (``"i'll"``)."""
    return _WORD.findall(text.lower())


def _plural(n: int, item: str) -> str:
    return f"{n} {item}" + ("" if n == 1 else "s")


class HumanAgent:
    """A person negotiating one game at a time through text streams (a terminal by default).

    :meth:`write` reads a line (``<selection>`` or ``/select`` ends the negotiation; end of input too),
    :meth:`read` prints the partner's message, :meth:`choose` asks what the person takes (``"1 0 2"`` books,
    hats, balls, or ``"no deal"``) until the answer is valid. Typed words go through :func:`tokenize_message`.

    Args:
        name: a label for transcripts.
        partner: how the partner is called in prompts.
        input: where lines are read (default ``sys.stdin``).
        output: where prompts and messages go (default ``sys.stdout``).
    """

    def __init__(self, *, name: str = "you", partner: str = "agent", input: TextIO | None = None,
                 output: TextIO | None = None) -> None:
        self.name = name
        self.partner = partner
        self._input = input
        self._output = output
        self.contexts: list[Context] = []
        self.outcomes: list[Outcome] | None = None

    @property
    def _in(self) -> TextIO:
        return self._input if self._input is not None else sys.stdin

    def _say(self, text: str) -> None:
        out = self._output if self._output is not None else sys.stdout
        out.write(text + "\n")
        out.flush()

    def _ask(self, prompt: str) -> str | None:
        """One line of input after ``prompt``; None at the end of the input."""
        out = self._output if self._output is not None else sys.stdout
        out.write(prompt)
        out.flush()
        line = self._in.readline()
        return None if line == "" else line.strip()

    def feed_context(self, contexts: Sequence[Context]) -> None:
        if len(contexts) != 1:
            raise ValueError(f"{self.name}: a person plays one game at a time, got {len(contexts)} contexts")
        self.contexts = list(contexts)
        self.outcomes = None
        ctx = contexts[0]
        self._say("There are " + ", ".join(_plural(c, item) for c, item in zip(ctx.counts, ITEMS)) + ".")
        self._say("Your values: " + ", ".join(f"{item} {v}" for item, v in zip(ITEMS, ctx.values))
                  + f" (all the items are worth {ctx.score(ctx.counts)} to you).")
        self._say(f"Type a message and press Enter; type {SELECTION} or /select to end the negotiation.")

    def _check(self, games: Sequence[int]) -> None:
        if list(games) not in ([], [0]):
            raise IndexError(f"{self.name}: a person plays game 0 only, got games {list(games)}")

    def write(self, games: Sequence[int]) -> list[list[str]]:
        self._check(games)
        if not games:
            return []
        while True:
            line = self._ask(f"{self.name}> ")
            if line is None or line.lower() in SELECT_COMMANDS:
                return [[SELECTION]]
            tokens = [t for t in tokenize_message(line) if t not in (EOS, SELECTION)]
            if tokens:
                return [[*tokens, EOS]]

    def read(self, games: Sequence[int], messages: Sequence[Sequence[str]]) -> None:
        self._check(games)
        for m in messages:
            if list(m) == [SELECTION]:
                self._say(f"{self.partner} ends the negotiation ({SELECTION}).")
            else:
                self._say(f"{self.partner}> " + " ".join(t for t in m if t != EOS))

    def choose(self, games: Sequence[int] | None = None) -> list[Split | None]:
        games = [0] if games is None else list(games)
        self._check(games)
        if not games:
            return []
        counts = self.contexts[0].counts
        prompt = (f"What do you take? Numbers of {', '.join(i + 's' for i in ITEMS)} (at most "
                  f"{' '.join(map(str, counts))}), or 'no deal': ")
        while True:
            line = self._ask(prompt)
            if line is None or line.lower() in ("no deal", "nodeal", "none", "-"):
                return [None]
            try:
                take = tuple(int(x) for x in line.replace(",", " ").split())
            except ValueError:
                take = ()
            if len(take) == len(ITEMS) and all(0 <= t <= c for t, c in zip(take, counts)):
                return [take]
            self._say(f"Please type {len(ITEMS)} numbers within {' '.join(map(str, counts))}, or 'no deal'.")

    def update(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)


__all__ = ["DEFAULT_MAX_WORDS", "DEFAULT_TEMPERATURE", "SELECT_COMMANDS", "Agent", "AgentSnapshot", "HumanAgent",
           "RnnAgent", "RolloutAgent",
           "tokenize_message"]
