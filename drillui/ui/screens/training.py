"""Training mode on screen: the trainer's pick, the trainee's name, the blind run screen.

Why the blind screen is the run screen with parts left out: the trainee must diagnose from the
same live panels an on-call engineer has (the four signals, traces, logs), so those stay; what
would give the answer away is not drawn at all: the drill's name and goal, its fault, the
runner's narration (it names what it arms), the drill's own signals, the trainer's steps, the
evidence checklist and the verdict. The questions panel takes the checklist's place. Answers
and hints go to the runner, which grades them on its own state and records them as events;
the panel redraws from those events like every other panel.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from drillui.record.events import AnswerGiven, Event, HintGiven, RunEnded
from drillui.runner.runner import RunOptions
from drillui.scenarios import Catalog, Drill, Question
from drillui.training.answers import expects
from drillui.training.grading import CLASS_CHOICES, NOTHING_WRONG
from drillui.ui.screens.drill import DrillScreen
from drillui.ui.screens.modals import PickerModal
from drillui.ui.widgets.checklist import Checklist
from drillui.ui.widgets.header import RunHeader, StepBar
from drillui.ui.widgets.logs import LogsPanel
from drillui.ui.widgets.promql import PromqlPanel
from drillui.ui.widgets.signals import SignalsPanel
from drillui.ui.widgets.traces import TracesPanel
from drillui.ui.widgets.training import TrainingPanel

if TYPE_CHECKING:
    from drillui.ui.app import DrillApp

DEFAULT_HOLD_SECONDS = 600.0
"""A training drill's fault is held until recovered, but never longer than this."""
MAX_NAME = 40
SURPRISE = "__surprise__"


def training_options(base: RunOptions, trainee: str, hold: float | None) -> RunOptions:
    return replace(base, guided=True, hold=hold if hold is not None else DEFAULT_HOLD_SECONDS, trainee=trainee)


def surprise(catalog: Catalog, rng: random.Random | None = None) -> Drill:
    """A drill at random among those with questions (the control drill included)."""
    pool = [d for d in catalog.drills if d.questions]
    return (rng or random.Random()).choice(pool)


# ---- modals ---------------------------------------------------------------------------------------


class TextInputModal(ModalScreen[str | None]):
    """One line of text: a name, an id."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, hint: str, *, placeholder: str = "", max_length: int = 200) -> None:
        super().__init__()
        self.title_text, self.hint, self.placeholder, self.max_length = title, hint, placeholder, max_length

    def compose(self) -> ComposeResult:
        with Vertical(id="modal-box"):
            yield Static(Content.styled(self.title_text, "bold"), id="modal-title")
            yield Input(placeholder=self.placeholder, max_length=self.max_length, id="text-input")
            yield Static(Content.styled(self.hint, "$foreground-muted"), id="modal-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            self.dismiss(value)

    def action_close(self) -> None:
        self.dismiss(None)


def ask_answer(q: Question) -> ModalScreen[str | None]:
    """The modal that takes an answer to `q`: a pick for classes and yes/no, a line for ids."""
    if q.kind == "failure_class":
        labels = {NOTHING_WRONG: "nothing is wrong"}
        # Alphabetical: the enum order would put the commonest answer first, highlighted.
        return PickerModal(q.ask, [(c, labels.get(c, c)) for c in sorted(CLASS_CHOICES)])
    if q.kind == "yes_no":
        return PickerModal(q.ask, [("yes", "yes"), ("no", "no")])
    return TextInputModal(q.ask, f"Type {expects(q)} and press Enter (Esc: close). Ids on screen are shortened: "
                                 "their first characters are enough.", placeholder="e.g. 3f9c1a2b")


# ---- the trainer's pick and the trainee's name ------------------------------------------------------


class TrainPickScreen(Screen[None]):
    """The trainer picks the drill (or a surprise) before the trainee's screen is shared."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", show=False),
    ]

    def __init__(self, catalog: Catalog, *, trainee: str | None = None, hold: float | None = None,
                 can_go_back: bool = True) -> None:
        super().__init__()
        self.catalog = catalog
        self.trainee = trainee
        self.hold = hold
        self.can_go_back = can_go_back

    @property
    def dashboard(self) -> DrillApp:
        return cast("DrillApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        yield Static(Content.assemble(("drillui train", "bold $accent"),
                                      ("  pick the drill before you share the trainee's screen · Enter starts it",
                                       "$foreground-muted")), id="menu-title")
        options = [Option(Content.assemble(("?  ", "bold $accent"), "Surprise me: any drill, the control one included"),
                          id=SURPRISE)]
        for d in self.catalog.drills:
            if d.questions:
                extra = " · control" if d.control else " · red herring" if d.red_herring else ""
                options.append(Option(Content.assemble((f"{d.letter}  ", "bold $accent"), d.title,
                                                       (f"  {len(d.questions)} questions{extra}", "$foreground-muted")),
                                      id=d.id))
        yield OptionList(*options, id="train-list")
        yield Static(Content.styled("The trainee's screen hides the drill's name, fault, steps, checklist and verdict. "
                                    "Follow it with `drillui watch --trainer` in another terminal: it shows them, and "
                                    "the answers as they arrive.", "$foreground-muted"), id="train-note")
        yield Footer(compact=True)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        choice = event.option.id
        drill = surprise(self.catalog) if choice == SURPRISE else self.catalog.get(str(choice))
        self.dashboard.start_training(drill, trainee=self.trainee, hold=self.hold)

    def action_back(self) -> None:
        if self.can_go_back:
            self.app.pop_screen()


# ---- the trainee's screen -------------------------------------------------------------------------


class TraineeScreen(DrillScreen):
    """A drill run blind: the live panels and the questions, nothing that names the answer."""

    AUTO_FOCUS = "#traces-table"
    blind: ClassVar[bool] = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "answer", "Answer", tooltip="Answer one of the questions (1-9 answer that one directly)"),
        Binding("h", "hint", "Hint", tooltip="Show the next hint (it costs points)"),
        Binding("R", "recover", "Recover", tooltip="You have found the cause: recover the fault (the time to recovery is measured)"),
        Binding("1", "answer_n(0)", "Q1", show=False),
        Binding("2", "answer_n(1)", "Q2", show=False),
        Binding("3", "answer_n(2)", "Q3", show=False),
        Binding("4", "answer_n(3)", "Q4", show=False),
        Binding("5", "answer_n(4)", "Q5", show=False),
        Binding("6", "answer_n(5)", "Q6", show=False),
        Binding("7", "answer_n(6)", "Q7", show=False),
        Binding("8", "answer_n(7)", "Q8", show=False),
        Binding("9", "answer_n(8)", "Q9", show=False),
    ]
    # What a trainee may not do: the trainer ends the drill, and the steps are the trainer's.
    BLIND_OFF: ClassVar[frozenset[str]] = frozenset(
        {"stop", "top_up", "apply_step", "step", "run_again", "clean_run"})

    def __init__(self, drill: Drill, *, options: RunOptions, autostart: bool = True) -> None:
        super().__init__(drill, autostart=autostart, options=options)
        self.trainee = options.trainee or ""

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        yield RunHeader(id="run-header")
        # Kept but never shown: the base screen's steps and checklist logic stays as it is.
        yield StepBar([], id="steps")
        # PromQL is a tool of the trade: a trainee may query the live metrics like anyone on call.
        yield PromqlPanel(id="promql")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with Vertical(id="signals-box"):
                    yield SignalsPanel(id="signals")
                yield TracesPanel(extra=tuple(self.drill.columns), id="traces")
            with Vertical(id="right"):
                with Vertical(id="checks-box"):
                    yield TrainingPanel(self.drill, "trainee", id="training")
                    yield Checklist(id="checklist")
                yield LogsPanel(self.state.logs, workers=len(self.drill.workload.workers), extra=tuple(self.drill.columns),
                                worker_names=tuple(w.name for w in self.drill.workload.workers), id="logs")
        yield Footer(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.BLIND_OFF or (action == "focus_panel" and parameters == ("checklist",)):
            return False
        if action == "back":
            return not self._run_active
        if action == "hint":
            return self.runner is not None and len(self.state.hints) < len(self.drill.hints)
        if action in ("answer", "answer_n"):
            return True
        return super().check_action(action, parameters)

    # ---- what stays hidden --------------------------------------------------------------------

    def _paint_header(self) -> None:
        super()._paint_header()
        header = self.query_one(RunHeader)
        header.drill_line = f"Training · {self.trainee}" if self.trainee else "Training"
        st = self.state
        if st.finished and st.end_state in ("passed", "failed"):
            header.phase = "ended"  # passed or failed is the verdict
        # The narration names the fault it arms: the trainee reads the panels instead.
        header.message = self._error or ("" if not st.finished else "the drill is over: your trainer has the verdict")
        if st.ended is not None:
            s = self.query_one(TrainingPanel).summary
            score = f" · score {s.score} of {s.max_score}" if s is not None else ""
            header.verdict = f"ENDED{score} · your trainer debriefs from the record"

    def _paint_signals(self) -> None:
        super()._paint_signals()
        self.query_one(SignalsPanel).drill_views = []  # the drill's own signals name what it is about

    def _paint_checks(self) -> None:
        self.query_one(TrainingPanel).show(self.state)
        box = self.query_one("#checks-box")
        box.border_title = "Questions · a answers (or 1-9) · h hint" if self.state.ended is None else "Questions · the drill is over"
        box.border_subtitle = ""

    def apply(self, ev: Event) -> None:
        super().apply(ev)
        if isinstance(ev, (AnswerGiven, HintGiven, RunEnded)):
            self._dirty.add("checks")
        live = self.is_mounted and self._run_active  # not for events fed from a record
        if isinstance(ev, AnswerGiven) and ev.via == "screen" and live:
            self._tell(ev)
        if isinstance(ev, HintGiven) and live:
            self.notify(ev.text, title=f"Hint {ev.index + 1}", timeout=15, markup=False)
        if isinstance(ev, RunEnded):
            self.refresh_bindings()

    # ---- answers and hints --------------------------------------------------------------------

    def action_answer(self) -> None:
        qs = self.drill.questions
        if len(qs) == 1:
            self.action_answer_n(0)
            return
        options = [(str(i), f"{i + 1}  {q.ask}") for i, q in enumerate(qs)]

        def chosen(value: str | None) -> None:
            if value is not None:
                self.action_answer_n(int(value))

        self.app.push_screen(PickerModal("Which question do you answer?", options), chosen)

    def action_answer_n(self, n: int) -> None:
        if not 0 <= n < len(self.drill.questions):
            return
        q = self.drill.questions[n]

        def given(value: str | None) -> None:
            if value:
                self.submit_answer(q, value)

        self.app.push_screen(ask_answer(q), given)

    def submit_answer(self, q: Question, value: str) -> None:
        runner = self.runner
        if runner is not None:
            runner.answer(q.id, value, by=self.trainee, via="screen")
        elif self.state.snapshot:
            self._answer_after_end(q, value)

    @work(thread=True, group="answer", exit_on_error=False)
    def _answer_after_end(self, q: Question, value: str) -> None:
        from pathlib import Path

        from drillui.training.answers import answer_after_end

        assert self.state.snapshot is not None
        ev = answer_after_end(Path(self.state.snapshot), q, value, by=self.trainee, via="screen")
        self.app.call_from_thread(self._after_end_answered, ev)

    def _after_end_answered(self, ev: AnswerGiven) -> None:
        self.apply(ev)
        self.paint()
        self._tell(ev)

    def _tell(self, ev: AnswerGiven) -> None:
        q = next((q for q in self.drill.questions if q.id == ev.question), None)
        if not ev.counted:
            self.notify(ev.evidence, title="Not counted: try again", severity="warning", markup=False)
        elif ev.right:
            self.notify(ev.evidence, title=f"Right: {q.ask if q else ev.question}", markup=False)
        else:
            self.notify(ev.evidence, title="Not right", severity="warning", markup=False)

    def action_hint(self) -> None:
        runner = self.runner
        if runner is not None:
            runner.hint(by=self.trainee or "trainee")
