"""The mutation check: plausible porting bugs applied one at a time; the tests must catch every one."""
