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


def test_the_command_asks_for_the_active_state():
    assert "ActiveState" in str(UnitStates().command(("flower.service",)))
