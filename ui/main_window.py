"""The main window: five tabs, a menu with shortcuts, a status bar, drag and drop of files."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QSystemTrayIcon, QTabWidget

from app import APP_NAME
from app.context import AppContext
from app.db.models import Dataset, Job
from app.jobs.lifecycle import JobStatus
from app.settings import AppSettings
from app.workers.background import TaskRunner
from app.workers.pool import WorkerPool
from ui.dashboard_tab import DashboardTab
from ui.datasets_tab import DatasetsTab
from ui.dialogs import show_about
from ui.hardware_info import HardwareInfo
from ui.help import open_user_guide
from ui.icons import app_icon
from ui.jobs_tab import JobsTab
from ui.models_tab import ModelsTab
from ui.ollama_connection import OllamaConnection, OllamaStatusLabel
from ui.playground import PlaygroundPane
from ui.settings_tab import SettingsTab
from ui.welcome import WelcomeDialog, mark_welcome_shown

_STATUS_TIMEOUT_MS = 8000
_OLLAMA_START_DELAY_MS = 1000
_WELCOME_DELAY_MS = 300  # the first-run panel opens once the window has painted


class MainWindow(QMainWindow):
    def __init__(
        self, context: AppContext, *, start_workers: bool = True, show_welcome: bool = False
    ) -> None:
        super().__init__()
        self.context = context
        self.runner = TaskRunner(parent=self)
        self.hardware = HardwareInfo(self.runner, self)
        self.welcome: WelcomeDialog | None = None
        settings = context.settings.load()
        self.pool = WorkerPool(context.database, context.home, settings.max_concurrent_jobs, self)
        self.ollama = OllamaConnection(settings.ollama_url, self)
        self._closing = False
        self._ollama_start: QTimer | None = None
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self.resize(1180, 760)
        self.setAcceptDrops(True)
        self._build_tabs()
        self._build_menus()
        self._build_status_bar()
        if start_workers:
            QTimer.singleShot(0, self.pool.start)  # after the first paint
            # A moment later, so that the HTTP stack's imports (in a worker thread) do not pile
            # on top of the pool's start and its trainers' spawn.
            self._ollama_start = QTimer(self, singleShot=True, interval=_OLLAMA_START_DELAY_MS)
            self._ollama_start.timeout.connect(self.ollama.start)
            self._ollama_start.start()
        if show_welcome and not settings.welcome_shown:
            QTimer.singleShot(_WELCOME_DELAY_MS, self, self.on_first_run)

    def _build_tabs(self) -> None:
        self.tabs = QTabWidget()
        self.dashboard_tab = DashboardTab(self.context, self.runner, self.pool)
        self.datasets_tab = DatasetsTab(self.context, self.runner)
        self.jobs_tab = JobsTab(self.context, self.runner, self.pool, ollama=self.ollama)
        self.models_tab = self._build_models_tab()
        self.settings_tab = SettingsTab(self.context, self.runner)
        for widget, title in (
            (self.dashboard_tab, "Dashboard"),
            (self.datasets_tab, "Datasets"),
            (self.jobs_tab, "Jobs"),
            (self.models_tab, "Models"),
            (self.settings_tab, "Settings"),
        ):
            self.tabs.addTab(widget, title)
        self.setCentralWidget(self.tabs)
        self.datasets_tab.datasets_changed.connect(self.dashboard_tab.refresh)
        self.datasets_tab.status_message.connect(self.show_status)
        self.settings_tab.status_message.connect(self.show_status)
        self.settings_tab.settings_saved.connect(self.on_settings_saved)
        self.jobs_tab.status_message.connect(self.show_status)
        self.jobs_tab.jobs_changed.connect(self.dashboard_tab.refresh)
        self.jobs_tab.models_changed.connect(self.models_list.refresh)
        self.jobs_tab.compare_requested.connect(self.open_playground)
        self.pool.job_finished.connect(self.on_pool_job_finished)

    def _build_models_tab(self) -> QTabWidget:
        """What Ollama has (pull, delete, copy, details) and the playground beside it."""
        tabs = QTabWidget()
        tabs.setDocumentMode(True)
        self.models_list = ModelsTab(self.ollama)
        self.playground = PlaygroundPane(self.ollama)
        tabs.addTab(self.models_list, "Installed")
        tabs.addTab(self.playground, "Playground")
        self.models_list.status_message.connect(self.show_status)
        self.models_list.models_changed.connect(self.playground.refresh_models)
        self.playground.status_message.connect(self.show_status)
        return tabs

    def open_playground(self, tuned: str, base: str) -> None:
        """Chat with a fine-tune beside its base (after publishing it)."""
        self.tabs.setCurrentWidget(self.models_tab)
        self.models_tab.setCurrentWidget(self.playground)
        self.playground.compare(tuned, base)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.import_action = QAction("&Import dataset…", self)
        self.import_action.setShortcut(QKeySequence.StandardKey.Open)
        self.import_action.triggered.connect(self.on_import_action_triggered)
        self.settings_action = QAction("&Settings", self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.triggered.connect(
            lambda: self.tabs.setCurrentWidget(self.settings_tab)
        )
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.triggered.connect(self.close)
        for action in (self.import_action, self.settings_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        self._build_help_menu()

    def _build_help_menu(self) -> None:
        help_menu = self.menuBar().addMenu("&Help")
        self.user_guide_action = QAction("&User guide", self)
        self.user_guide_action.setShortcut(QKeySequence.StandardKey.HelpContents)
        self.user_guide_action.triggered.connect(lambda: open_user_guide(self))
        self.welcome_action = QAction("&Welcome", self)
        self.welcome_action.triggered.connect(self.open_welcome)
        self.about_action = QAction(f"&About {APP_NAME}", self)
        self.about_action.triggered.connect(lambda: show_about(self, self.hardware))
        for action in (self.user_guide_action, self.welcome_action):
            help_menu.addAction(action)
        help_menu.addSeparator()
        help_menu.addAction(self.about_action)

    # --- the welcome panel -----------------------------------------------------------------

    def on_first_run(self) -> None:
        """The welcome panel, once per data folder: remembered as soon as it has been shown."""
        self.open_welcome()
        store = self.context.settings
        self.runner.submit(lambda _c: mark_welcome_shown(store))

    def open_welcome(self) -> WelcomeDialog:
        """Show the welcome panel (non-modal): made on first use, raised if open, else refreshed."""
        if self.welcome is None:
            self.welcome = WelcomeDialog(
                self.context, self.runner, self.ollama, self.hardware, self
            )
            self.welcome.dataset_imported.connect(self.on_welcome_dataset_imported)
            self.welcome.job_queued.connect(self.on_welcome_job_queued)
            self.welcome.settings_requested.connect(self.settings_action.trigger)
            self.welcome.user_guide_requested.connect(self.user_guide_action.trigger)
        elif self.welcome.isVisible():
            self.welcome.raise_()  # asked again while open: bring it to the front
        else:
            self.welcome.refresh()
        self.welcome.show()
        return self.welcome

    def on_welcome_dataset_imported(self, dataset: Dataset) -> None:
        self.datasets_tab.refresh(select_id=dataset.id)
        self.dashboard_tab.refresh()
        self.show_status(f"Imported {dataset.name}: {dataset.rows:,} records.")

    def on_welcome_job_queued(self, job: Job) -> None:
        """As after the New Job dialog: the Jobs tab shows it and the pool is told."""
        self.jobs_tab.on_dialog_job_created(job)
        self.tabs.setCurrentWidget(self.jobs_tab)

    def _build_status_bar(self) -> None:
        self.ollama_label = OllamaStatusLabel(self.ollama)
        self.statusBar().addPermanentWidget(self.ollama_label)
        self.home_label = QLabel(f"Data: {self.context.home.root}")
        self.statusBar().addPermanentWidget(self.home_label)
        self.show_status("Ready.")

    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text, _STATUS_TIMEOUT_MS)

    def on_settings_saved(self, settings: AppSettings) -> None:
        self.pool.set_max_workers(settings.max_concurrent_jobs)
        self.ollama.set_url(settings.ollama_url)

    def on_pool_job_finished(self, job_id: str, status: str) -> None:
        """A desktop notification when a job completes or fails (the status bar says it too)."""
        if status not in (JobStatus.COMPLETED, JobStatus.FAILED):
            return
        failed = status == JobStatus.FAILED
        name = self.jobs_tab.job_name(job_id)
        text = f"Training job {name} {status}." + (" The Jobs tab says why." if failed else "")
        self.show_status(text)
        if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
            icon = QSystemTrayIcon.MessageIcon
            self._tray().showMessage(APP_NAME, text, icon.Warning if failed else icon.Information)

    def _tray(self) -> QSystemTrayIcon:
        tray: QSystemTrayIcon | None = getattr(self, "_tray_icon", None)
        if tray is None:  # made on the first notification: most sessions never need one
            tray = self._tray_icon = QSystemTrayIcon(app_icon(), self)
            tray.show()
        return tray

    def on_import_action_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.datasets_tab)
        self.datasets_tab.request_import()

    # --- drag and drop ---------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _local_files(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = _local_files(event)
        if paths:
            event.acceptProposedAction()
            self.tabs.setCurrentWidget(self.datasets_tab)
            self.datasets_tab.import_files(paths)

    # --- closing ---------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.pool.running_jobs and not self._closing:
            event.ignore()
            self._ask_about_running_jobs()
            return
        self.shut_down()
        event.accept()

    def _ask_about_running_jobs(self) -> None:
        count = len(self.pool.running_jobs)
        text = (
            f"{count} training job{'s are' if count > 1 else ' is'} running. Stop now and resume "
            "next time from the last checkpoint, or keep the window open?"
        )
        box = QMessageBox(QMessageBox.Icon.Question, APP_NAME, text, parent=self)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Keep open", QMessageBox.ButtonRole.RejectRole)
        box.finished.connect(
            lambda _r: self._stop_jobs_and_quit() if box.clickedButton() is stop else None
        )
        self._quit_box = box
        box.open()

    def _stop_jobs_and_quit(self) -> None:
        """Ask the trainers to checkpoint (without waiting here), then close when they have."""
        self._closing = True
        self.show_status("Stopping training jobs; they resume next time…")
        self.pool.stopped.connect(self.close)
        self.pool.stop_all()

    def shut_down(self) -> None:
        """Cancel background work (an import cancelled leaves nothing behind) and wait for it."""
        if self._ollama_start is not None:
            self._ollama_start.stop()
        self.ollama.stop()
        self.models_list.shut_down()
        self.playground.shut_down()
        self.runner.shutdown()
        self.pool.shutdown()

    def closing_work(self) -> list[Coroutine[Any, Any, None]]:
        """Async clean-up the app runs before its event loop closes (Ollama's connections)."""
        return self.ollama.closing_work()


def _local_files(event: QDragEnterEvent | QDropEvent) -> list[Path]:
    mime = event.mimeData()
    if not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
