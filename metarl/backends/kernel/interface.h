#pragma once
// The described structures of a call (mirrored by metarl/backends/native.py as ctypes.Structure classes
// of the same names and field order; metarl_struct_sizes and metarl_struct_fields let it check
// that they agree, struct by struct and field by field), and what this kernel implements.

#include <cstddef>

#include "vecmath.h"

// The learning rules this kernel implements: the signatures of their declarations (metarl/core/rule.py
// RuleDeclaration.signature): the standard rule's, and the standard rule with the reward relative to its running
// mean (source reward.change, trace reward.mean) as the last input of the reward and the connection cell (rule
// reward_change; Options::reward_change). metarl/backends/native.py reads them from this file to decline any other
// declaration by name before building, and checks that a built library states the same.
#define METARL_RULE                                                                                          \
    "reward_network(1:reward,1:neuron.sum,1:neuron.sample,1:neuron.output,1:neuron.bias,1:neuron.sigma)"     \
    "->(S:signal);"                                                                                          \
    "node_network(1:neuron.sum,1:neuron.sample,1:neuron.output,1:neuron.bias,1:neuron.sigma,S:signal)"       \
    "->(S:signal,1:bias,1:sigma);"                                                                           \
    "connection_network(1:post.sum,1:post.sample,1:post.output,1:post.bias,1:post.sigma,1:pre.sum,"          \
    "1:pre.sample,1:pre.output,1:pre.bias,1:pre.sigma,S:post.signal,1:weight,1:first_layer)"                 \
    "->(S:signal,1:weight)"
#define METARL_RULE_REWARD_CHANGE                                                                            \
    "reward_network(1:reward,1:neuron.sum,1:neuron.sample,1:neuron.output,1:neuron.bias,1:neuron.sigma,"     \
    "1:reward.change)->(S:signal);"                                                                          \
    "node_network(1:neuron.sum,1:neuron.sample,1:neuron.output,1:neuron.bias,1:neuron.sigma,S:signal)"       \
    "->(S:signal,1:bias,1:sigma);"                                                                           \
    "connection_network(1:post.sum,1:post.sample,1:post.output,1:post.bias,1:post.sigma,1:pre.sum,"          \
    "1:pre.sample,1:pre.output,1:pre.bias,1:pre.sigma,S:post.signal,1:weight,1:first_layer,1:reward.change)" \
    "->(S:signal,1:weight)"


extern "C" {

// The actor network: layers and layer sizes [n_0 .. n_L].
struct Network {
    int64_t layers;
    int64_t sizes[MAX_LAYERS + 1];
};

// The env's and the rule's options (metarl.envs.base.EnvOptions, the actor config and the conditions).
struct Options {
    float max_torque, max_speed;  // max_speed <= 0: none
    float obs_noise;              // std of the sensor noise on the observation; 0: none
    float weight_limit, sigma_limit, sigma_min;  // (dt and the learning rate are per individual: Buffers)
    float reward_mean_time;  // the time constant of trace reward.mean, seconds (rule.reward_mean_time)
    int32_t env;  // the environment: its id in physics.h ENVS (metarl_env)
    int32_t rk4, reward_delta, plastic, zero_reward, noise, spin, gym;
    int32_t reward_change;  // 1: the rule METARL_RULE_REWARD_CHANGE (Buffers.reward_mean), 0: METARL_RULE
    int64_t goal_switch;  // the goal takes Buffers.goal's second row from this step number on; -1 = never
    int64_t goal_switch_last;  // > goal_switch: the step is per lifetime, Buffers.goal's third row minus goal_switch
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
    float* env_params;  // (params of the env, P): physics.h ENVS, metarl.envs param_defaults order
    float* sign;        // (1, P) motor direction
    float* goal;        // (3, P) hidden goal before the switch, from it on, and the lifetime's switch step
    float* dt;          // (1, P) integration step
    float* learning_rate;  // (1, P) the rule's rate
    float* state;       // (2 * links, P)
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
    float* reward_mean;          // (1, P) trace reward.mean; null unless Options.reward_change
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
    METARL_FIELD(Options, max_torque), METARL_FIELD(Options, max_speed), METARL_FIELD(Options, obs_noise),
    METARL_FIELD(Options, weight_limit), METARL_FIELD(Options, sigma_limit),
    METARL_FIELD(Options, sigma_min), METARL_FIELD(Options, reward_mean_time),
    METARL_FIELD(Options, env), METARL_FIELD(Options, rk4), METARL_FIELD(Options, reward_delta),
    METARL_FIELD(Options, plastic), METARL_FIELD(Options, zero_reward), METARL_FIELD(Options, noise),
    METARL_FIELD(Options, spin), METARL_FIELD(Options, gym), METARL_FIELD(Options, reward_change),
    METARL_FIELD(Options, goal_switch),
    METARL_FIELD(Options, goal_switch_last),
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
    METARL_FIELD(Buffers, reward_mean),
};
#undef METARL_FIELD

}  // extern "C"
