"""flowerbed.units.UnitStates reads `systemctl show` for several units in one command."""

from flowerbed.units import UnitStates

SHOW = """Id=flower.service
ActiveState=failed
SubState=failed
UnitFileState=enabled

Id=nginx.service
ActiveState=active
SubState=running
UnitFileState=enabled

Id=never.service
ActiveState=inactive
SubState=dead
UnitFileState="""


def test_running_enabled_and_failed_per_unit():
    states = UnitStates().process(SHOW.splitlines())
    assert states == {
        "flower.service": {"running": False, "enabled": True, "failed": True},
        "nginx.service": {"running": True, "enabled": True, "failed": False},
        "never.service": {"running": False, "enabled": False, "failed": False},
    }


def test_the_command_asks_systemctl_for_every_property_the_states_are_read_from():
    """The states from `systemctl show` limited to the properties the command asks for are the
    states from all of them: a property the command forgot would read as missing."""
    units = ("flower.service", "nginx.service", "never.service")
    argv = UnitStates().command(units).get_raw_value().split()
    assert argv[:2] == ["systemctl", "show"] and tuple(argv[-3:]) == units, argv
    (properties,) = [arg.removeprefix("--property=") for arg in argv if arg.startswith("--")]
    asked = properties.split(",")
    shown = [line for line in SHOW.splitlines() if not line or line.partition("=")[0] in asked]
    assert UnitStates().process(shown) == UnitStates().process(SHOW.splitlines())
