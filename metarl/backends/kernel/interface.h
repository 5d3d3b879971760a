#pragma once
// The described structures of a call (mirrored by metarl/backends/native.py as ctypes.Structure classes
// of the same names and field order; metarl_struct_sizes and metarl_struct_fields let it check
// that they agree, struct by struct and field by field).
//
// Nothing here names a rule, a source, a trace or an environment: what the rule's cells read, how its traces
// change and what the environment does come from program.h, generated from their Python definitions by
// metarl/backends/codegen.py (its sizes: N_STATE, N_OBS, N_PARAMS, N_TRACES, N_SCALARS).

#include <cstddef>

#include "vecmath.h"

extern "C" {

// The actor network: layers and layer sizes [n_0 .. n_L].
struct Network {
    int64_t layers;
    int64_t sizes[MAX_LAYERS + 1];
};

// The options of a call: the skeleton's own (sensor noise, limits, conditions, the goal's switch) and the
// program's runtime scalars (program.h's N_SCALARS, in the order codegen.Program.scalars names them).
struct Options {
    float obs_noise;  // std of the sensor noise on the observation; 0: none
    float weight_limit, sigma_limit, sigma_min;  // (dt and the learning rate are per individual: Buffers)
    int32_t plastic, zero_reward, noise;
    int32_t n_scalars;  // must be the program's N_SCALARS
    int64_t goal_switch;  // the goal takes Buffers.goal's second row from this step number on; -1 = never
    int64_t goal_switch_last;  // > goal_switch: the step is per lifetime, Buffers.goal's third row minus goal_switch
    float scalars[MAX_SCALARS];
};

// Where one cell's parameters start in the genome (metarl.core.genome.GenomeLayout), each part row-major.
struct CellMap {
    int32_t inputs, outputs, w_state, b_state, w_output, b_output;
};

struct GenomeMap {
    CellMap reward, node, connection;
    int32_t size;  // genes per individual
};

// The state of a population, each (features, P) float32; the kernel updates all but the first six.
struct Buffers {
    float* genome;      // (G, P)
    float* env_params;  // (N_PARAMS, P): the env's param_defaults order
    float* sign;        // (1, P) motor direction
    float* goal;        // (3, P) hidden goal before the switch, from it on, and the lifetime's switch step
    float* dt;          // (1, P) integration step
    float* learning_rate;  // (1, P) the rule's rate
    float* state;       // (N_STATE, P)
    float* prev_height; // (1, P)
    float* weights[MAX_LAYERS];  // (n_{k-1} * n_k, P)
    float* biases[MAX_LAYERS];   // (n_k, P), as sigmas, sums, samples, outputs
    float* sigmas[MAX_LAYERS];
    float* sums[MAX_LAYERS];
    float* samples[MAX_LAYERS];
    float* outputs[MAX_LAYERS];
    float* rule_reward;          // (n_L * H, P)
    float* nodes[MAX_LAYERS];    // (n_k * H, P)
    float* edges[MAX_LAYERS];    // (n_{k-1} * n_k * H, P)
    float* traces;               // (N_TRACES, P) the rule's traces (codegen.Program.traces order); null if none
};

// Every field of the structures above, by name: metarl/backends/native.py compares each offset and size with its
// mirror's, so that two swapped fields of one type fail as surely as a missing one.
struct FieldInfo {
    const char* name;
    int64_t offset, size;
};

#define METARL_FIELD(S, f) {#S "." #f, (int64_t)offsetof(S, f), (int64_t)sizeof(((S*)nullptr)->f)}
static const FieldInfo METARL_FIELDS[] = {
    METARL_FIELD(Network, layers), METARL_FIELD(Network, sizes),
    METARL_FIELD(Options, obs_noise), METARL_FIELD(Options, weight_limit), METARL_FIELD(Options, sigma_limit),
    METARL_FIELD(Options, sigma_min), METARL_FIELD(Options, plastic), METARL_FIELD(Options, zero_reward),
    METARL_FIELD(Options, noise), METARL_FIELD(Options, n_scalars), METARL_FIELD(Options, goal_switch),
    METARL_FIELD(Options, goal_switch_last), METARL_FIELD(Options, scalars),
    METARL_FIELD(CellMap, inputs), METARL_FIELD(CellMap, outputs), METARL_FIELD(CellMap, w_state),
    METARL_FIELD(CellMap, b_state), METARL_FIELD(CellMap, w_output), METARL_FIELD(CellMap, b_output),
    METARL_FIELD(GenomeMap, reward), METARL_FIELD(GenomeMap, node), METARL_FIELD(GenomeMap, connection),
    METARL_FIELD(GenomeMap, size),
    METARL_FIELD(Buffers, genome), METARL_FIELD(Buffers, env_params), METARL_FIELD(Buffers, sign),
    METARL_FIELD(Buffers, goal), METARL_FIELD(Buffers, dt), METARL_FIELD(Buffers, learning_rate),
    METARL_FIELD(Buffers, state), METARL_FIELD(Buffers, prev_height),
    METARL_FIELD(Buffers, weights), METARL_FIELD(Buffers, biases), METARL_FIELD(Buffers, sigmas),
    METARL_FIELD(Buffers, sums), METARL_FIELD(Buffers, samples), METARL_FIELD(Buffers, outputs),
    METARL_FIELD(Buffers, rule_reward), METARL_FIELD(Buffers, nodes), METARL_FIELD(Buffers, edges),
    METARL_FIELD(Buffers, traces),
};
#undef METARL_FIELD

}  // extern "C"
