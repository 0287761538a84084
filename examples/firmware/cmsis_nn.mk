# An export on CMSIS-NN (`heartsight export --kernels cmsis-nn` writes OUT/cmsis_nn) needs the firmware's own
# CMSIS-NN and CMSIS-Core, by path: make ... CMSIS_NN_DIR=path/to/CMSIS-NN CMSIS_CORE_DIR=path/to/CMSIS-Core.
# Included by this directory's Makefile and by examples/firmware_monitor's. In: MODEL_DIR, CMSIS_OBJ_DIR (where the
# objects go). Out, when MODEL_DIR holds hs_cmsis.c (else empty): CMSIS_MODEL (1), CMSIS_INCLUDES, CMSIS_OBJS and the
# rule that compiles CMSIS-NN's int8 support functions (the matrix product hs_cmsis.c calls) with their own (less
# strict) flags.
CMSIS_NN_DIR ?=
CMSIS_CORE_DIR ?=
CMSIS_MODEL :=
CMSIS_INCLUDES :=
CMSIS_OBJS :=
ifneq ($(wildcard $(MODEL_DIR)/hs_cmsis.c),)
ifeq ($(CMSIS_NN_DIR),)
$(error $(MODEL_DIR) runs on CMSIS-NN: pass CMSIS_NN_DIR=path/to/CMSIS-NN and CMSIS_CORE_DIR=path/to/CMSIS-Core)
endif
CMSIS_MODEL := 1
CMSIS_INCLUDES := -I$(CMSIS_NN_DIR)/Include -I$(CMSIS_CORE_DIR)/CMSIS/Core/Include
CMSIS_SRCS := $(sort $(wildcard $(CMSIS_NN_DIR)/Source/NNSupportFunctions/*_s8*.c))
CMSIS_OBJS := $(patsubst $(CMSIS_NN_DIR)/Source/%.c,$(CMSIS_OBJ_DIR)/%.o,$(CMSIS_SRCS))

$(CMSIS_OBJ_DIR)/%.o: $(CMSIS_NN_DIR)/Source/%.c
	mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 $(ARCH) -ffunction-sections -fdata-sections $(CMSIS_INCLUDES) -c -o $@ $<
endif
