"""Running a SAM or CloudFormation template: ``streamfn run template.yaml``, ``streamfn
validate template.yaml``, or from code::

    from streamfn.sam import LoadOptions, build_app, plan_template

    plan = plan_template("template.yaml", LoadOptions(parameter_overrides={"Env": "dev"}))
    built = build_app(plan, state_dir=".streamfn")
    async with built.app.running(*built.servers):
        ...

The path of a template through the package: ``template_yaml`` reads it, ``parameters``
checks its parameters, ``expand`` expands SAM with AWS's ``aws-sam-translator``, ``load``
applies Conditions and sets up ``intrinsics`` over ``resources``; ``planner`` hands each
resource to its reader (``read_functions``, ``read_mappings`` with ``read_mq``,
``read_schedules``, reading with ``props``), which fill the typed records of ``plan``, listing
what is ignored and what cannot run; ``prepare`` creates the template's queues, streams and
tables (``--create-resources``) and reads the MQ mappings' secrets; ``build`` makes the App
(``handlers`` loads the code, ``schedule`` runs the timers); ``report`` and ``command`` are the
CLI's. Needs the ``sam`` extra (aws-sam-translator, PyYAML); nothing here imports an AWS client
library (``prepare`` reaches AWS through ``streamfn.connectors.aws_resources``, extra ``aws``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import Built, build_app, plan_template
    from .load import LoadOptions

__all__ = ["Built", "LoadOptions", "build_app", "plan_template"]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: they need the ``sam`` extra."""
    if name in ("Built", "build_app", "plan_template"):
        from . import build

        return getattr(build, name)
    if name == "LoadOptions":
        from .load import LoadOptions

        return LoadOptions
    raise AttributeError(name)
