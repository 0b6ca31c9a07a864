"""The ``@nomad`` step decorator.

This module is imported in Metaflow's runtime and in the task on Nomad, so it
imports nothing heavy: Jinja and the API client are loaded only where a job
is rendered or submitted.  The per-attempt launcher does not import it.
"""

from __future__ import annotations

import json
import os
import sys

from metaflow.decorators import StepDecorator
from metaflow.metadata_provider import MetaDatum
from metaflow.unbounded_foreach import UBF_CONTROL

from metaflow_nomad.config import (
    WORKLOAD_ENV,
    flow_directory,
    read_config,
)
from metaflow_nomad.errors import NomadException, raise_problems
from metaflow_nomad.model import (
    META_TEMPLATE,
    META_TEMPLATE_SHA256,
    META_TEMPLATE_VERSION,
    NODE_NAME_ENV,
    TRIGGERS_ENV,
    task_meta_env,
)
from metaflow_nomad.plugin.packaging import project_file, shipped_modules
from metaflow_nomad.plugin.step_settings import (
    check_step,
    conda_environment_problem,
    datastore_problem,
    flow_settings_problems,
    gather,
    is_parallel_step,
    load_project_file,
    resolve_for_step,
)
from metaflow_nomad.settings import DECORATOR_ATTRIBUTES, StepSettings


class NomadDecorator(StepDecorator):
    """
    Run this step as a Nomad batch job.

    Parameters
    ----------
    image : str, optional
        Container image (docker driver). Default: METAFLOW_NOMAD_DEFAULT_IMAGE or
        python:<major>.<minor> of the launching interpreter.
    driver : str, optional
        docker (default), exec or raw_exec. Default: METAFLOW_NOMAD_DRIVER.
    region, datacenters, node_pool, nomad_namespace, priority
        Where the job is placed.
    constraints : list[dict], optional
        Nomad constraints: [{"attribute": ..., "operator": ..., "value": ...}].
    cpu : number, optional
        Below 100: vCPUs (converted at METAFLOW_NOMAD_MHZ_PER_VCPU, default 1000 MHz);
        100 or more: MHz.
    memory, disk : int, optional
        MB.
    gpu : int, optional
        Number of "<gpu_vendor>/gpu" devices.
    env, meta : dict, optional
        Extra task environment and job Meta.
    template : str, optional
        A template name or path (see nomad_templates/README.md).
    pending_timeout : number, optional
        Seconds a task may wait for placement before it fails.

    With ``@parallel`` (or a subclass such as ``@torchrun``), each attempt of the step
    is one Nomad job running its whole gang of ``num_parallel`` nodes, which find the
    control through Nomad and fail, stop and retry as one unit (render/parallel.py).
    """

    name = "nomad"
    defaults = dict(DECORATOR_ATTRIBUTES)
    supports_conda_environment = True
    target_platform = "linux-64"

    package_url = None
    package_sha = None
    package_metadata = None
    run_lease = None
    run_time_limit = None
    _problems: tuple[NomadException, ...] = ()
    _datastore_problem = None
    _settings = None

    def step_init(self, flow, graph, step, decos, environment, flow_datastore, logger):
        self.logger = logger
        self.environment = environment
        self.step = step
        self.flow_datastore = flow_datastore
        self.parallel = is_parallel_step(decos)
        if WORKLOAD_ENV in os.environ:
            # Inside the task: everything below was checked by the launcher.
            return
        # step_init also runs for `show`, `logs`, `nomad list`...: a bad setting must
        # not break those, so every problem is kept and the run raises those of all
        # steps together (runtime_init, before anything contacts the cluster).
        problem = conda_environment_problem(step, decos, flow_datastore.TYPE)
        if problem:
            # Not deferred: Metaflow solves @pypi/@conda environments while it builds
            # the code package, after step_init but before runtime_init.
            raise NomadException(problem)
        from metaflow.plugins.timeout_decorator import get_run_time_limit_for_task

        problems: list[NomadException] = []
        config = read_config()
        gather(problems, check_step, step, decos)
        self.run_time_limit = get_run_time_limit_for_task(decos)
        flow_dir = flow_directory()
        document = gather(problems, load_project_file, flow_dir)
        self._settings = None
        if document is not None:
            self._settings = gather(
                problems, resolve_for_step, step, decos, self, flow_dir, document, config
            )
        self._problems = tuple(problems)
        self._datastore_problem = datastore_problem(step, flow_datastore, config)

    @property
    def settings(self) -> StepSettings:
        """The step's settings for a run: raises whatever would make the run fail."""
        datastore = [NomadException(self._datastore_problem)] if self._datastore_problem else []
        raise_problems([*self._problems, *datastore])
        return self._settings

    @property
    def preview_settings(self) -> StepSettings:
        """The settings for a dry run (``render``): valid, though the datastore may
        not be one that tasks can use (see ``datastore_problem``)."""
        raise_problems(list(self._problems))
        return self._settings

    @property
    def problems(self) -> tuple[NomadException, ...]:
        """Every problem of this step's settings and decorators, found in step_init
        (the datastore's aside); ``flow_settings_problems`` gathers those of all steps."""
        return self._problems

    @property
    def datastore_problem(self) -> str | None:
        return self._datastore_problem

    def package_init(self, flow, step_name, environment):
        try:
            import jinja2  # noqa: F401
        except ImportError as exc:
            raise NomadException(
                f"@nomad needs the package {exc.name!r}: "
                f"{sys.executable} -m pip install metaflow-nomad"
            ) from None

    def add_to_package(self):
        # The task on Nomad imports this decorator; ship the library in the code
        # package so images need no metaflow-nomad install.  A deployed run also
        # resolves its steps' settings from the package: ship the project file.
        from metaflow.packaging_sys import ContentType

        for path, arcname in shipped_modules():
            yield path, arcname, ContentType.CODE_CONTENT
        for path, arcname in project_file(flow_directory()):
            yield path, arcname, ContentType.USER_CONTENT

    def runtime_init(self, flow, graph, package, run_id):
        # Every problem of every @nomad step, in one report, before the first
        # contact with the cluster: the first @nomad step initialised raises it
        # (re-checking for the others is cheap: their problems are already known).
        raise_problems(flow_settings_problems(flow, graph))
        self._check_cluster(self.settings)
        self.flow = flow
        self.graph = graph
        self.package = package
        self.run_id = run_id
        self._hold_run_lease(flow.name, run_id)

    def _hold_run_lease(self, flow_name: str, run_id: str) -> None:
        """One lease per run, renewed by this runtime until it finishes
        (``plugin.run_lease``): its tasks stop if it dies outright."""
        cls = type(self)
        if cls.run_lease is None:
            from metaflow_nomad.plugin.run_lease import RunLease, lease_timeout

            timeout = lease_timeout(read_config())
            lease = RunLease.for_run(self.flow_datastore, flow_name, run_id, timeout)
            cls.run_lease = lease.start()

    def _check_cluster(self, settings: StepSettings) -> None:
        """Before the run's first task: can the cluster take this step's jobs?

        Once per process and namespace (the runtime calls this for every step), and
        quick: an unreachable address fails in under two seconds.
        """
        from metaflow_nomad.api.connection import ConnectionSettings
        from metaflow_nomad.api.preflight import check_cluster_for_run

        check_cluster_for_run(
            ConnectionSettings.from_environment(),
            settings.nomad_namespace,
            settings.region,
            doctor_command=f"python {os.path.basename(sys.argv[0])} nomad doctor",
            node_pool=settings.node_pool,
        )

    def runtime_task_created(
        self, task_datastore, task_id, split_index, input_paths, is_cloned, ubf_context
    ):
        if not is_cloned:
            self._save_package_once(self.flow_datastore, self.package)

    def runtime_step_cli(self, cli_args, retry_count, max_user_code_retries, ubf_context):
        if ubf_context == UBF_CONTROL and self.parallel:
            # The attempt's job runs the whole gang (render.parallel).  Set here what
            # @parallel's own runtime_step_cli sets, which may run after this one.
            cli_args.command_options["num-parallel"] = str(cli_args.task.ubf_iter.num_parallel)
            cli_args.command_options["split-index"] = "0"
        elif ubf_context == UBF_CONTROL:
            # The control task of an unbounded foreach starts its workers itself,
            # and Nomad would run it as a plain task: it fails with an internal
            # error (as on @kubernetes outside @parallel).  Nothing is submitted.
            raise NomadException(
                f"Step '{self.step}': this step is an unbounded foreach (its foreach "
                "value is an UnboundedForeachInput), which @nomad cannot run: Nomad "
                "would start the control task without its workers. Run the step "
                "without @nomad, or iterate over a list (a bounded foreach)."
            )
        # After the user code's retries are spent, @catch's fallback runs locally.
        if retry_count <= max_user_code_retries:
            from metaflow_nomad.plugin.attempt_planning import hand_to_launcher, plan_attempt

            hand_to_launcher(cli_args, plan_attempt(self, cli_args))

    def runtime_finished(self, exception):
        """Backstop for the no-orphans rule: stop any job of this run still alive."""
        if type(self).run_lease is not None:
            type(self).run_lease.stop()
        if exception is None or not getattr(self, "run_id", None):
            return
        from metaflow_nomad.api.lookup import stop_run_jobs

        stop_run_jobs(self.flow.name, self.run_id, echo=print)

    def task_pre_step(
        self,
        step_name,
        task_datastore,
        metadata,
        run_id,
        task_id,
        flow,
        graph,
        retry_count,
        max_retries,
        ubf_context,
        inputs,
    ):
        self.metadata = metadata
        self.task_datastore = task_datastore
        if WORKLOAD_ENV not in os.environ:
            return
        if ubf_context == UBF_CONTROL and self.parallel:
            _record_gang(flow, run_id, step_name, task_id)
        # Job Meta arrives as NOMAD_META_<KEY>, upper-cased, dots kept.
        fields = {
            "nomad-node-name": os.environ.get(NODE_NAME_ENV),
            "nomad-job-id": os.environ.get("NOMAD_JOB_ID"),
            "nomad-alloc-id": os.environ.get("NOMAD_ALLOC_ID"),
            "nomad-datacenter": os.environ.get("NOMAD_DC"),
            "nomad-namespace": os.environ.get("NOMAD_NAMESPACE"),
            "nomad-region": os.environ.get("NOMAD_REGION"),
            "nomad-template": os.environ.get(task_meta_env(META_TEMPLATE)),
            "nomad-template-version": os.environ.get(task_meta_env(META_TEMPLATE_VERSION)),
            "nomad-template-sha256": os.environ.get(task_meta_env(META_TEMPLATE_SHA256)),
        }
        events = os.environ.get(TRIGGERS_ENV)
        if events:
            _expose_trigger(events)
            if step_name == getattr(graph, "start_step", "start"):
                # Where the UI and `nomad-workflows list-runs` look for what started a run.
                fields["execution-triggers"] = events
        metadata.register_metadata(
            run_id,
            step_name,
            task_id,
            [
                MetaDatum(field=k, value=v, type=k, tags=[f"attempt_id:{retry_count}"])
                for k, v in fields.items()
                if v
            ],
        )
        # No log sidecar: the task's capture process uploads the logs (task/log_capture.py).
        # No task_finished either: with local metadata and a remote datastore the
        # task's bootstrap sends its metadata back once the step's last process has
        # ended (task.run_metadata), as a card's final render writes metadata
        # after every decorator's task_finished may have run.

    def task_post_step(self, step_name, flow, graph, retry_count, max_user_code_retries):
        """Inside the task, after the step's code: no success for an orphaned attempt."""
        if WORKLOAD_ENV not in os.environ:
            return
        from metaflow_nomad.task.lease_watch import expired_lease

        silent = expired_lease()
        if silent is not None:
            raise NomadException(
                f"The run's launcher has not renewed the run's lease for {silent:.0f} s: it is "
                "gone, and this attempt is not recorded as a success. Resume the run."
            )

    @classmethod
    def _save_package_once(cls, flow_datastore, package):
        if cls.package_url is None:
            cls.package_url, cls.package_sha = flow_datastore.save_data([package.blob], len_hint=1)[
                0
            ]
            cls.package_metadata = package.package_metadata


def _record_gang(flow, run_id: str, step_name: str, task_id: str) -> None:
    """The control task names every node of its gang (itself first), as Metaflow's
    runtime expects of a @parallel control task: the join's inputs are those tasks."""
    from metaflow_nomad.model import parallel_node_task_id

    num_nodes = flow._parallel_ubf_iter.num_parallel
    flow._control_mapper_tasks = [
        f"{run_id}/{step_name}/{parallel_node_task_id(task_id, i)}" for i in range(num_nodes)
    ]
    flow._control_task_is_mapper_zero = True


def _expose_trigger(events: str) -> None:
    """``current.trigger`` in a task of a run that events started, as Argo's steps have it."""
    from metaflow import current
    from metaflow.events import Trigger

    current._update_env({"trigger": Trigger(json.loads(events))})
