# Fleetcast A/B for boards that boot a boot.scr (distro boot) instead of bootcmd.
# Compile: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr
# Needs the variables of fleetcast-ab.env in the environment, and
# CONFIG_BOOTCOUNT_LIMIT + CONFIG_BOOTCOUNT_ENV (U-Boot counts the boots and
# runs altbootcmd before it gets here).
if env exists boot_part; then true; else setenv boot_part a; setenv upgrade_available 0; setenv bootcount 0; setenv bootlimit 3; saveenv; fi
run fleetcast_boot
